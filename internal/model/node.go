package model

import "net/netip"

// NodeParams is what the backends need to know of the node kproxy runs on, for one IP
// family. nodeaddr.Resolver resolves it at every sync from the Node object and the
// node's interfaces, so every backend and the health check server see the same node,
// and follow it when its addresses or podCIDRs change.
type NodeParams struct {
	Family Family
	// IPs are the Node object's addresses of the family; PrimaryIP is the first of them
	// (or, without a Node object, the first global unicast address of an interface).
	IPs       []netip.Addr
	PrimaryIP netip.Addr
	// NodePortAll means NodePorts (and health check node ports) answer on every local
	// address; otherwise only on NodePortIPs.
	NodePortAll bool
	NodePortIPs []netip.Addr
	// LocalTraffic says how traffic from this node's pods is told apart.
	LocalTraffic LocalTraffic
}

// LocalTraffic is a resolved detect-local mode: at most one field is set. With none
// set, no traffic is known to come from local pods (upstream's "no-op" detector).
type LocalTraffic struct {
	// CIDR holds the pods' addresses (modes ClusterCIDR and NodeCIDR, the latter from
	// the Node's podCIDR of the family).
	CIDR netip.Prefix
	// Interface is the pods' bridge (mode BridgeInterface).
	Interface string
	// InterfacePrefix begins the name of every pod interface (mode InterfaceNamePrefix).
	InterfacePrefix string
}

// Detects reports whether the detector tells local pod traffic apart at all.
func (l LocalTraffic) Detects() bool {
	return l.CIDR.IsValid() || l.Interface != "" || l.InterfacePrefix != ""
}

// NodeParams returns the snapshot's node parameters for family f; ok is false when
// the snapshot was made without a resolver (a backend driven directly), and the
// backend then keeps the values it was configured with.
func (s *Snapshot) NodeParams(f Family) (np NodeParams, ok bool) {
	np, ok = s.Nodes[f]
	return np, ok
}
