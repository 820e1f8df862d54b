package trace

import (
	"math"
	"net/netip"
	"os"
	"sort"
	"strings"
	"testing"
)

// fixtureEnv is the node of upstream's test fixture (reference 4.1): node IP
// 192.168.0.2 and its other local addresses.
func fixtureEnv() Env {
	var env Env
	for _, a := range []string{"192.168.0.2", "192.168.1.2", "192.168.99.11", "2001:db8::1", "2001:db8:1::2"} {
		env.LocalAddresses = append(env.LocalAddresses, netip.MustParseAddr(a))
	}
	return env
}

// flowCase is one row of the reference's packet-flow tables.
type flowCase struct {
	name    string
	from    Origin
	proto   string // "" is tcp
	src     string
	dst     string // "IP:port"
	verdict Verdict
	// endpoints is the set of reachable endpoints, for a DNAT verdict.
	endpoints []string
	masq      bool
}

func (c flowCase) packet(t *testing.T) Packet {
	t.Helper()
	ap, err := netip.ParseAddrPort(c.dst)
	if err != nil {
		t.Fatalf("%s: bad destination %q", c.name, c.dst)
	}
	proto := c.proto
	if proto == "" {
		proto = "tcp"
	}
	from := c.from
	if from == "" {
		from = FromPod
	}
	return Packet{Protocol: proto, Source: netip.MustParseAddr(c.src), Destination: ap.Addr(), Port: ap.Port(), From: from}
}

// check asserts the verdict, the endpoint set (and that the probabilities add up to
// one) and the masquerade decision.
func (c flowCase) check(t *testing.T, r *Result) {
	t.Helper()
	if r.Verdict != c.verdict {
		t.Errorf("%s: verdict %s, want %s\n%s", c.name, r.Verdict, c.verdict, text(r))
		return
	}
	want := append([]string(nil), c.endpoints...)
	sort.Strings(want)
	if got := r.EndpointAddresses(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("%s: endpoints %v, want %v\n%s", c.name, got, want, text(r))
	}
	if c.verdict == VerdictDNAT {
		sum := 0.0
		for _, e := range r.Endpoints {
			sum += e.Probability
		}
		if math.Abs(sum-1) > 1e-5 {
			t.Errorf("%s: probabilities add up to %v\n%s", c.name, sum, text(r))
		}
		if r.Masqueraded != c.masq {
			t.Errorf("%s: masqueraded %v, want %v\n%s", c.name, r.Masqueraded, c.masq, text(r))
		}
	}
}

func text(r *Result) string {
	var sb strings.Builder
	_ = r.WriteText(&sb)
	return sb.String()
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func runIPTCases(t *testing.T, dump []byte, env Env, cases []flowCase) {
	t.Helper()
	for _, c := range cases {
		r, err := TraceIPTables(dump, c.packet(t), env)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		c.check(t, r)
	}
}
