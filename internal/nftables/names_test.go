package nftables

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"

	"github.com/kproxy/kproxy/internal/model"
)

// The two names the reference says upstream produces (hashes checked there).
func TestChainNamesMatchUpstream(t *testing.T) {
	sp := &model.ServicePort{Name: spn("ns1", "svc1", "p80"), Protocol: v1.ProtocolTCP, Port: 80}
	if got, want := prefixService+portBase(sp), "service-ULMVA6XW-ns1/svc1/tcp/p80"; got != want {
		t.Errorf("service chain = %q, want %q", got, want)
	}
	if got, want := prefixEndpoint+endpointBase(sp, ep("10.180.0.1", 80, "node2")), "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"; got != want {
		t.Errorf("endpoint chain = %q, want %q", got, want)
	}
}

func TestEndpointNameIPv6HasNoColons(t *testing.T) {
	sp := &model.ServicePort{Name: spn("ns", "web", "http"), Protocol: v1.ProtocolTCP, Port: 80}
	got := endpointBase(sp, ep("fd00:10:180::1", 8080, "node2"))
	if !strings.HasSuffix(got, "-ns/web/tcp/http__fd00.10.180..1/8080") || strings.Contains(got, ":") {
		t.Errorf("endpoint base = %q", got)
	}
}

func TestLongNamesAreTruncatedAndStayDistinct(t *testing.T) {
	long := strings.Repeat("a", 63)
	a := &model.ServicePort{Name: spn(long, long, long+"x"), Protocol: v1.ProtocolTCP}
	b := &model.ServicePort{Name: spn(long, long, long+"y"), Protocol: v1.ProtocolTCP}
	ea := endpointBase(a, ep("fd00:1111:2222:3333:4444:5555:6666:7777", 65535, ""))
	eb := endpointBase(b, ep("fd00:1111:2222:3333:4444:5555:6666:7777", 65535, ""))
	if len(ea) != nameBaseMax || !strings.HasSuffix(ea, "...") {
		t.Errorf("long base not truncated to %d: %d %q", nameBaseMax, len(ea), ea)
	}
	if ea == eb {
		t.Errorf("truncated names collide: %q", ea)
	}
	if len(prefixExternal+ea) > 256 {
		t.Errorf("chain name longer than nft allows: %d", len(prefixExternal+ea))
	}
}
