package iptables

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
	// MasqueradeBit is the fwmark bit KUBE-MARK-MASQ sets (14 gives 0x4000).
	MasqueradeBit int
	// LocalDetector tells pod traffic from other traffic; the zero value detects
	// nothing. It and the NodePort addresses are the node's parameters: the Proxier
	// sets them at each sync from the snapshot (model.NodeParams).
	LocalDetector LocalDetector
	// NodePortAll means NodePorts answer on every local address (nodePortAddresses
	// unset or "all"); otherwise only on NodePortIPs.
	NodePortAll bool
	NodePortIPs []netip.Addr
	// LocalhostNodePorts lets NodePorts answer on 127.0.0.0/8 (IPv4 only; needs
	// route_localnet, which the applier sets).
	LocalhostNodePorts bool
	// DropInvalid adds KUBE-FORWARD's ctstate INVALID drop (upstream omits it when
	// nf_conntrack_tcp_be_liberal is set).
	DropInvalid bool
	// NFAcct counts, as upstream does, the INVALID drops and the packets accepted by
	// localhost NodePorts in the nfacct objects of package nfacct (the caller made
	// them; the metrics read them). Off where the kernel has no nfnetlink_acct.
	NFAcct bool
}

func (p *Params) masqMark() string { return fmt.Sprintf("0x%x", uint32(1)<<p.MasqueradeBit) }

// LocalDetector holds the iptables match arguments that select traffic from local pods
// (and its negation), per kube-proxy's detect-local modes.
type LocalDetector struct {
	ifLocal, ifNotLocal []string
}

// Implemented reports whether the detector matches anything.
func (d LocalDetector) Implemented() bool { return len(d.ifLocal) > 0 }

// NotLocalArgs are the match arguments that select traffic not from local pods
// (empty when the detector detects nothing), for rules other packages write (ipvs).
func (d LocalDetector) NotLocalArgs() []string { return append([]string(nil), d.ifNotLocal...) }

// DetectorFor spells the node's local-traffic detector in iptables matches.
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

// DetectByCIDR matches sources in a CIDR (modes ClusterCIDR and NodeCIDR).
func DetectByCIDR(cidr netip.Prefix) LocalDetector {
	return LocalDetector{ifLocal: []string{"-s", cidr.String()}, ifNotLocal: []string{"!", "-s", cidr.String()}}
}

// DetectByBridge matches packets arriving on the pod bridge (mode BridgeInterface).
func DetectByBridge(iface string) LocalDetector {
	return LocalDetector{ifLocal: []string{"-i", iface}, ifNotLocal: []string{"!", "-i", iface}}
}

// DetectByInterfacePrefix matches packets from pod interfaces (mode InterfaceNamePrefix).
func DetectByInterfacePrefix(prefix string) LocalDetector {
	return LocalDetector{ifLocal: []string{"-i", prefix + "+"}, ifNotLocal: []string{"!", "-i", prefix + "+"}}
}
