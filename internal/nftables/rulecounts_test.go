package nftables

import (
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// ruleMessage is an NFT_MSG_NEWRULE payload: the nfgenmsg header and attributes.
func ruleMessage(t testing.TB, attrs ...netlink.Attribute) []byte {
	t.Helper()
	b, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{unix.NFPROTO_IPV4, unix.NFNETLINK_V0, 0, 0}, b...)
}

func TestRuleChain(t *testing.T) {
	for _, tc := range []struct {
		name    string
		data    []byte
		want    string
		wantErr bool
	}{
		{"table and chain", ruleMessage(t,
			netlink.Attribute{Type: unix.NFTA_RULE_TABLE, Data: []byte("kube-proxy\x00")},
			netlink.Attribute{Type: unix.NFTA_RULE_CHAIN, Data: []byte("services\x00")},
			netlink.Attribute{Type: unix.NFTA_RULE_HANDLE, Data: []byte{0, 0, 0, 0, 0, 0, 0, 7}}), "services", false},
		{"no chain", ruleMessage(t, netlink.Attribute{Type: unix.NFTA_RULE_TABLE, Data: []byte("kube-proxy\x00")}), "", true},
		{"short header", []byte{2, 0}, "", true},
		{"truncated attribute", append(ruleMessage(t), 8, 0, 2, 0, 's'), "", true},
	} {
		got, err := ruleChain(tc.data)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("%s: ruleChain = %q, %v; want %q, error %v", tc.name, got, err, tc.want, tc.wantErr)
		}
	}
}

// FuzzRuleChain: whatever the kernel (or a corrupted buffer) hands over, the decoder
// returns a chain or an error and never panics; a chain it returns was in the input.
func FuzzRuleChain(f *testing.F) {
	f.Add(ruleMessage(f,
		netlink.Attribute{Type: unix.NFTA_RULE_TABLE, Data: []byte("kube-proxy\x00")},
		netlink.Attribute{Type: unix.NFTA_RULE_CHAIN, Data: []byte("services\x00")}))
	f.Add([]byte{2, 0, 0, 0, 4, 0, 2, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		chain, err := ruleChain(data)
		if err == nil && len(chain) > len(data) {
			t.Fatalf("chain %q longer than the message", chain)
		}
	})
}
