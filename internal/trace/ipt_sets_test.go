package trace

import (
	"net/netip"
	"testing"
)

// "-m set" matches read the sets given in Env.IPSets, along the match's directions.
func TestIPSetMatches(t *testing.T) {
	dump := []byte(`*filter
:INPUT ACCEPT [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SOURCE-RANGES-FIREWALL - [0:0]
:KUBE-NODE-PORT - [0:0]
-A INPUT -j KUBE-PROXY-FIREWALL
-A KUBE-PROXY-FIREWALL -m set --match-set KUBE-LOAD-BALANCER-FW dst,dst -j KUBE-SOURCE-RANGES-FIREWALL
-A KUBE-SOURCE-RANGES-FIREWALL -m set --match-set KUBE-LOAD-BALANCER-SOURCE-CIDR dst,dst,src -j RETURN
-A KUBE-SOURCE-RANGES-FIREWALL -j DROP
-A INPUT -j KUBE-NODE-PORT
-A KUBE-NODE-PORT -p tcp -m set --match-set KUBE-NODE-PORT-TCP dst -j ACCEPT
COMMIT
`)
	env := Env{LocalAddresses: []netip.Addr{netip.MustParseAddr("1.2.3.4"), netip.MustParseAddr("192.168.0.2")},
		IPSets: map[string][]string{
			"KUBE-LOAD-BALANCER-FW":          {"1.2.3.4,tcp:80"},
			"KUBE-LOAD-BALANCER-SOURCE-CIDR": {"1.2.3.4,tcp:80,203.0.113.0/25"},
			"KUBE-NODE-PORT-TCP":             {"30080"},
		}}
	runIPTCases(t, dump, env, []flowCase{
		{name: "source in the range", from: FromExternal, src: "203.0.113.2", dst: "1.2.3.4:80", verdict: VerdictNone},
		{name: "source outside the range", from: FromExternal, src: "203.0.113.130", dst: "1.2.3.4:80", verdict: VerdictDrop},
		{name: "another port of the address", from: FromExternal, src: "203.0.113.130", dst: "1.2.3.4:81", verdict: VerdictNone},
		{name: "another protocol", from: FromExternal, proto: "udp", src: "203.0.113.130", dst: "1.2.3.4:80", verdict: VerdictNone},
		{name: "bitmap port set", from: FromExternal, src: "203.0.113.130", dst: "192.168.0.2:30080", verdict: VerdictAccept},
	})
	// Without sets the matches are not understood: they do not match.
	env.IPSets = nil
	runIPTCases(t, dump, env, []flowCase{
		{name: "no sets given", from: FromExternal, src: "203.0.113.130", dst: "1.2.3.4:80", verdict: VerdictNone},
	})
}
