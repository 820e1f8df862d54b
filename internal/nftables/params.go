package nftables

import (
	"fmt"
	"net/netip"

	"github.com/kproxy/kproxy/internal/model"
)

// Params are the node-wide settings the ruleset depends on; they come from the config
// and the node, and change rarely (a change forces a full sync).
type Params struct {
	Family        model.Family
	MasqueradeAll bool
	// MasqueradeBit is the packet mark bit that asks for masquerade (14 gives 0x4000),
	// the same bit as the iptables backend uses.
	MasqueradeBit int
	// LocalDetector tells pod traffic from other traffic; the zero value detects
	// nothing. It and the NodePort addresses are the node's parameters: the Proxier
	// sets them at each sync from the snapshot (model.NodeParams).
	LocalDetector LocalDetector
	// NodePortAll means NodePorts answer on every local address except loopback;
	// otherwise only on NodePortIPs (loopback addresses among them are ignored).
	NodePortAll bool
	NodePortIPs []netip.Addr
	// ServiceCIDRs are the ranges ClusterIPs are allocated from: traffic to an address
	// in them that no Service holds is dropped. May be empty (no such rule).
	ServiceCIDRs []netip.Prefix
}

func (p *Params) masqMark() string { return fmt.Sprintf("0x%x", uint32(1)<<p.MasqueradeBit) }

// ipKeyword is the payload protocol of the family as nft spells it in matches.
func (p *Params) ipKeyword() string {
	if p.Family == model.IPv6 {
		return "ip6"
	}
	return "ip"
}

// addrType is the nft data type of an address of the family.
func (p *Params) addrType() string {
	if p.Family == model.IPv6 {
		return "ipv6_addr"
	}
	return "ipv4_addr"
}

// LocalDetector holds the nft matches that select traffic from local pods (and its
// negation), per kube-proxy's detect-local modes.
type LocalDetector struct {
	ifLocal, ifNotLocal string
}

// Implemented reports whether the detector matches anything.
func (d LocalDetector) Implemented() bool { return d.ifLocal != "" }

// DetectorFor spells the node's local-traffic detector in nft matches.
func DetectorFor(l model.LocalTraffic) LocalDetector {
	switch {
	case l.CIDR.IsValid():
		return DetectByCIDR(l.CIDR)
	case l.Interface != "":
		return DetectByBridge(l.Interface)
	case l.InterfacePrefix != "":
		return DetectByInterfacePrefix(l.InterfacePrefix)
	}
	return LocalDetector{}
}

// DetectByCIDR matches sources in a CIDR (modes ClusterCIDR and NodeCIDR). The CIDR's
// family must be the proxier's.
func DetectByCIDR(cidr netip.Prefix) LocalDetector {
	kw := "ip"
	if model.FamilyOf(cidr.Addr()) == model.IPv6 {
		kw = "ip6"
	}
	c := cidr.Masked().String()
	return LocalDetector{ifLocal: kw + " saddr " + c, ifNotLocal: kw + " saddr != " + c}
}

// DetectByBridge matches packets arriving on the pod bridge (mode BridgeInterface).
func DetectByBridge(iface string) LocalDetector {
	return LocalDetector{ifLocal: `iifname "` + iface + `"`, ifNotLocal: `iifname != "` + iface + `"`}
}

// DetectByInterfacePrefix matches packets from pod interfaces (mode InterfaceNamePrefix).
func DetectByInterfacePrefix(prefix string) LocalDetector {
	return LocalDetector{ifLocal: `iifname "` + prefix + `*"`, ifNotLocal: `iifname != "` + prefix + `*"`}
}
