package trace

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/internal/iptables"
	"github.com/kproxy/kproxy/internal/model"
)

// The JSON document's field names are a contract with scripts and the e2e suite.
func TestJSONDocumentFields(t *testing.T) {
	dump := readFile(t, "testdata/upstream-2.5.rules")
	r, err := TraceIPTables(dump, flowCase{src: "10.0.0.2", dst: "172.30.0.41:80"}.packet(t), fixtureEnv())
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Mode      string `json:"mode"`
		Verdict   string `json:"verdict"`
		Service   string `json:"service"`
		Endpoints []struct {
			Address     string  `json:"address"`
			Probability float64 `json:"probability"`
		} `json:"endpoints"`
		Masqueraded *bool `json:"masqueraded"`
		Path        []struct {
			Table, Chain, Rule string
		} `json:"path"`
		Packet struct {
			Protocol, Source, Destination, From string
			Port                                int
		} `json:"packet"`
	}
	if err := json.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Mode != "iptables" || doc.Verdict != "DNAT" || doc.Service != "ns1/svc1:p80" || doc.Masqueraded == nil ||
		len(doc.Endpoints) != 2 || doc.Endpoints[0].Address != "10.180.0.1:80" || doc.Endpoints[0].Probability != 0.5 ||
		len(doc.Path) == 0 || doc.Path[0].Table != "nat" || doc.Packet.Port != 80 || doc.Packet.From != "pod" {
		t.Errorf("unexpected document:\n%s", buf.String())
	}

	// A verdict without endpoints still has an (empty) endpoints array.
	r, err = TraceIPTables(dump, flowCase{src: "10.0.0.2", dst: "172.30.0.41:443"}.packet(t), fixtureEnv())
	if err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	_ = r.WriteJSON(&buf)
	if !bytes.Contains(buf.Bytes(), []byte(`"endpoints": []`)) || !bytes.Contains(buf.Bytes(), []byte(`"verdict": "NONE"`)) {
		t.Errorf("unexpected document:\n%s", buf.String())
	}
}

// Group I's IPv6 variant, through kproxy's IPv6 ruleset.
func TestIPv6NodePort(t *testing.T) {
	sp := svcPort("ns", "np", "p80", v1.ProtocolTCP, "fd00:172:30::41", 80)
	sp.NodePort = 3001
	p := fixtureParams()
	p.Family = model.IPv6
	p.LocalDetector = iptables.DetectByCIDR(netip.MustParsePrefix("fd00:10::/64"))
	dump := build(p, world{sp: {endpoint("fd00:10:180::1", 80, "node2"), endpoint("fd00:10:180::2:1", 80, "test-node")}})
	both := []string{"[fd00:10:180::1]:80", "[fd00:10:180::2:1]:80"}
	runIPTCases(t, dump, fixtureEnv(), []flowCase{
		{name: "I2 v6", from: FromExternal, src: "2600:5200::1", dst: "[2001:db8::1]:3001", verdict: VerdictDNAT, endpoints: both, masq: true},
		{name: "I1 v6", src: "fd00:10::2", dst: "[fd00:172:30::41]:80", verdict: VerdictDNAT, endpoints: both},
		{name: "I4' v6", from: FromNode, src: "::1", dst: "[::1]:3001", verdict: VerdictNone},
	})
}

func TestPacketValidation(t *testing.T) {
	ok := Packet{Protocol: "TCP", Source: netip.MustParseAddr("10.0.0.2"), Destination: netip.MustParseAddr("10.0.0.3"), Port: 80, From: FromPod}
	if err := ok.Validate(); err != nil || ok.Protocol != "tcp" {
		t.Fatalf("valid packet: %v (protocol %q)", err, ok.Protocol)
	}
	for name, mut := range map[string]func(*Packet){
		"protocol": func(p *Packet) { p.Protocol = "icmp" },
		"families": func(p *Packet) { p.Destination = netip.MustParseAddr("::1") },
		"port":     func(p *Packet) { p.Port = 0 },
		"origin":   func(p *Packet) { p.From = "somewhere" },
	} {
		p := ok
		mut(&p)
		if err := p.Validate(); err == nil {
			t.Errorf("%s: invalid packet accepted", name)
		}
	}
}

// Matches the tracer does not know are reported and do not match.
func TestUnknownMatchIsNoted(t *testing.T) {
	dump := []byte("*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n" +
		"-A PREROUTING -j KUBE-SERVICES\n" +
		"-A KUBE-SERVICES -m set --match-set foo dst -j DNAT --to-destination 10.1.1.1:80\n" +
		"-A KUBE-SERVICES -d 172.30.0.1/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.1.1.2:80\nCOMMIT\n")
	r, err := TraceIPTables(dump, flowCase{src: "10.0.0.2", dst: "172.30.0.1:80"}.packet(t), Env{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Verdict != VerdictDNAT || len(r.Endpoints) != 1 || r.Endpoints[0].Address != "10.1.1.2:80" || len(r.Notes) == 0 {
		t.Errorf("unexpected result:\n%s", text(r))
	}
}
