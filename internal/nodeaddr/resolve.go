package nodeaddr

import (
	"net/netip"

	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/internal/model"
)

// DetectLocal is kube-proxy's detect-local setting: the mode and what it needs.
type DetectLocal struct {
	// Mode is "ClusterCIDR" (also when empty), "NodeCIDR", "BridgeInterface" or
	// "InterfaceNamePrefix".
	Mode            string
	ClusterCIDRs    []netip.Prefix
	BridgeInterface string
	InterfacePrefix string
}

// Resolver resolves, at every sync, the node's parameters (model.NodeParams) for both
// families: the one place where the Node object, the node's interfaces, the
// nodePortAddresses setting and the detect-local mode meet.
type Resolver struct {
	NodePorts   *Selector
	DetectLocal DetectLocal
	// LocalAddrs lists the addresses of the node's interfaces (LocalAddrs in
	// production); asked once per Resolve, and only when a setting needs them.
	LocalAddrs func() ([]netip.Addr, error)
}

// Resolve returns the parameters of both families for the node as it is now (node is
// nil until the Node object is known).
func (r *Resolver) Resolve(node *model.Node) map[model.Family]model.NodeParams {
	var local []netip.Addr
	if !r.NodePorts.MatchesAll() || node == nil || len(node.Addresses) == 0 {
		var err error
		if local, err = r.LocalAddrs(); err != nil {
			klog.ErrorS(err, "Cannot list the node's local addresses; NodePorts and health checks may miss some")
		}
	}
	out := make(map[model.Family]model.NodeParams, 2)
	for _, f := range []model.Family{model.IPv4, model.IPv6} {
		np := model.NodeParams{Family: f, NodePortAll: r.NodePorts.MatchesAll()}
		if node != nil {
			np.IPs = model.AddrsOf(node.Addresses, f)
		}
		np.PrimaryIP, _ = PrimaryIP(f, node, local)
		if !np.NodePortAll {
			np.NodePortIPs = r.NodePorts.Resolve(f, node, local)
		}
		np.LocalTraffic = r.DetectLocal.resolve(f, node)
		out[f] = np
	}
	return out
}

// resolve picks the detector of family f; NodeCIDR follows the Node's podCIDRs.
func (d DetectLocal) resolve(f model.Family, node *model.Node) model.LocalTraffic {
	switch d.Mode {
	case "BridgeInterface":
		return model.LocalTraffic{Interface: d.BridgeInterface}
	case "InterfaceNamePrefix":
		return model.LocalTraffic{InterfacePrefix: d.InterfacePrefix}
	case "NodeCIDR":
		if node != nil {
			if cs := model.PrefixesOf(node.PodCIDRs, f); len(cs) > 0 {
				return model.LocalTraffic{CIDR: cs[0]}
			}
		}
		return model.LocalTraffic{}
	}
	if cs := model.PrefixesOf(d.ClusterCIDRs, f); len(cs) > 0 {
		return model.LocalTraffic{CIDR: cs[0]}
	}
	return model.LocalTraffic{}
}
