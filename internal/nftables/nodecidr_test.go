package nftables

import (
	"net/netip"
	"testing"

	"github.com/kproxy/kproxy/internal/model"
	"github.com/kproxy/kproxy/internal/nodeaddr"
)

// Detect-local mode NodeCIDR: pod traffic is told by the Node's podCIDR of the
// family, resolved at each sync (nodeaddr.Resolver); a changed detector rebuilds the
// rules even on a sync that was asked to be partial.
func TestDetectLocalByNodeCIDR(t *testing.T) {
	p := referenceParams()
	p.LocalDetector = LocalDetector{}
	resolver := nodeaddr.Resolver{NodePorts: nodeaddr.MustParse("192.168.0.2/32"), DetectLocal: nodeaddr.DetectLocal{Mode: "NodeCIDR"},
		LocalAddrs: func() ([]netip.Addr, error) { return addrs("192.168.0.2"), nil }}
	w := newWorld()
	w.node.PodCIDRs = []netip.Prefix{netip.MustParsePrefix("fd00:10:1::/64"), netip.MustParsePrefix("10.0.1.0/24")}
	w.set(webPort(), ep("10.180.0.1", 80, "node2"))
	tp := newTestProxier(p)
	snapshot := func() *model.Snapshot {
		s := w.snapshot()
		s.Nodes = resolver.Resolve(s.Node)
		return s
	}
	tp.sync(t, snapshot(), true)
	mustHave(t, tp.dumpLines(), `add rule ip kube-proxy services ip daddr @cluster-ips ip saddr != 10.0.1.0/24 mark set mark or 0x4000 comment "masquerade clusterIP traffic from outside cluster"`)

	w.node.PodCIDRs = []netip.Prefix{netip.MustParsePrefix("10.0.2.0/24")}
	tp.sync(t, snapshot(), false)
	mustHave(t, tp.dumpLines(), `add rule ip kube-proxy services ip daddr @cluster-ips ip saddr != 10.0.2.0/24 mark set mark or 0x4000 comment "masquerade clusterIP traffic from outside cluster"`)
	mustNotMention(t, tp.dumpLines(), "10.0.1.0/24")

	// No podCIDR of the family: nothing is detected, ClusterIP traffic is not marked.
	w.node.PodCIDRs = nil
	tp.sync(t, snapshot(), false)
	mustNotMention(t, tp.dumpLines(), "services ip daddr @cluster-ips")
}
