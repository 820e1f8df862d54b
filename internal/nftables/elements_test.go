package nftables

import (
	"encoding/hex"
	"strings"
	"testing"

	"github.com/kproxy/kproxy/internal/model"
)

// The expected bytes are what nft 1.0.6 sends for the same elements (nft
// --debug=netlink), so that nft reads back what kproxy writes as its own.
func TestEncodeElementsAsNftDoes(t *testing.T) {
	ops := []elementOp{
		{el: element{container: "service-X", isMap: true, key: []string{"0-32767"}, value: "10.0.0.2 . 8080"}},
		{el: element{container: mapServiceIPs, isMap: true, key: []string{"10.96.0.1", "tcp", "80"}, value: "goto svc", comment: "x"}},
		{del: true, el: element{container: "service-X", isMap: true, key: []string{"32768-65535"}, value: "10.0.0.3 . 8081"}},
		{el: element{container: setHairpinConnections, key: []string{"10.0.0.2", "10.0.0.2", "udp", "53"}}},
	}
	groups, err := encodeOps(model.IPv4, ops)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, g := range groups {
		for _, e := range g.elements {
			line := g.container + " key=" + hex.EncodeToString(e.Key)
			if len(e.Val) > 0 {
				line += " val=" + hex.EncodeToString(e.Val)
			}
			if e.VerdictData != nil {
				line += " verdict=" + e.VerdictData.Chain
			}
			if e.IntervalEnd {
				line += " end"
			}
			if e.Comment != "" {
				line += " comment=" + e.Comment
			}
			if g.del {
				line = "del " + line
			}
			got = append(got, line)
		}
	}
	// Deletes go first, then adds, each grouped by container.
	want := []string{
		"del service-X key=00008000",
		"del service-X key=00010000 end",
		"service-X key=00000000 val=0a0000021f900000",
		"service-X key=00008000 end",
		"service-ips key=0a60000106000000" + "00500000 verdict=svc comment=x",
		"hairpin-connections key=0a0000020a000002" + "1100000000350000",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("encoded:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	v6, err := encodeOps(model.IPv6, []elementOp{{el: element{container: "local-Y", isMap: true, key: []string{"0-65535"}, value: "fd00:10::2 . 80"}}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := hex.EncodeToString(v6[0].elements[0].Val), "fd000010000000000000000000000002"+"00500000"; got != want {
		t.Errorf("IPv6 endpoint value %s, want %s", got, want)
	}

	for _, bad := range []element{
		{container: "somebody-elses", key: []string{"1.2.3.4"}},
		{container: setClusterIPs, key: []string{"fd00::1"}},
		{container: "service-X", isMap: true, key: []string{"9-3"}, value: "10.0.0.2 . 80"},
		{container: mapServiceNodePorts, isMap: true, key: []string{"icmp", "80"}, value: "drop"},
	} {
		if _, err := encodeOps(model.IPv4, []elementOp{{el: bad}}); err == nil {
			t.Errorf("element %v of %s encoded; want an error", bad.key, bad.container)
		}
	}
}
