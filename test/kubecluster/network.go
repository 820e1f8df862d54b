package kubecluster

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// member is a namespace plugged into the lan bridge, with its address there.
type member struct{ ns, ip string }

func (c *Cluster) members() []member {
	m := []member{{cpNS, CPIP}}
	for _, n := range Nodes {
		m = append(m, member{n.ns(), n.IP})
	}
	return m
}

// buildNetwork makes the namespaces, the bridge that joins them and the routes
// between the nodes' pod ranges. A namespace left over from an earlier run is
// removed first.
func (c *Cluster) buildNetwork() error {
	_ = c.removeNetwork()
	all := []string{lanNS}
	for _, m := range c.members() {
		all = append(all, m.ns)
	}
	for _, ns := range all {
		if _, err := run("ip", "netns", "add", ns); err != nil {
			return err
		}
		if _, err := inNS(ns, "ip", "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	// The bridge's own address is every member's default gateway, a dead end: the lan
	// namespace forwards nothing anywhere and answers with ICMP "net unreachable".
	// Nodes need a default route all the same, as real ones have: a node's own
	// connection to a ClusterIP is routed before netfilter rewrites it, and without
	// any route to the address it fails before the proxy's rules are consulted.
	if _, err := inNS(lanNS, "sh", "-c", "ip link add br0 type bridge && ip link set br0 up && ip addr add "+
		fmt.Sprintf("%s/%d", lanGateway, lanPrefixLen)+" dev br0 && sysctl -q -w net.ipv4.ip_forward=1"); err != nil {
		return err
	}
	for i, m := range c.members() {
		host, peer := fmt.Sprintf("p%d", i), "eth0"
		steps := [][]string{
			{"ip", "link", "add", host, "netns", lanNS, "type", "veth", "peer", "name", peer, "netns", m.ns},
			{"ip", "-n", lanNS, "link", "set", host, "master", "br0", "up"},
			{"ip", "-n", m.ns, "addr", "add", fmt.Sprintf("%s/%d", m.ip, lanPrefixLen), "dev", peer},
			{"ip", "-n", m.ns, "link", "set", peer, "up"},
		}
		for _, s := range steps {
			if _, err := run(s[0], s[1:]...); err != nil {
				return err
			}
		}
	}
	// Pod ranges: every other member reaches a node's pods through that node. The
	// control plane reaches Services through node1, as a client outside the nodes
	// would through a router.
	for _, m := range c.members() {
		for _, n := range Nodes {
			if n.IP == m.ip {
				continue
			}
			if _, err := run("ip", "-n", m.ns, "route", "add", n.PodCIDR, "via", n.IP); err != nil {
				return err
			}
		}
	}
	if _, err := run("ip", "-n", cpNS, "route", "add", ServiceCIDR, "via", Nodes[0].IP); err != nil {
		return err
	}
	for _, m := range c.members() {
		if _, err := run("ip", "-n", m.ns, "route", "add", "default", "via", lanGateway); err != nil {
			return err
		}
	}
	for _, n := range Nodes {
		// Forwarding between pods and the lan; bridged pod traffic passes netfilter
		// (the Service rules see pod-to-pod hairpins on cni0), as on a real node.
		if _, err := inNS(n.ns(), "sysctl", "-q", "-w",
			"net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
			"net.bridge.bridge-nf-call-iptables=1", "net.bridge.bridge-nf-call-ip6tables=1"); err != nil {
			return err
		}
	}
	return nil
}

// removeNetwork deletes the cluster's namespaces and the ones containerd's CNI made
// for its pods since Up (a namespace's deletion removes its veths and routes).
func (c *Cluster) removeNetwork() error {
	var errs []error
	names := []string{lanNS, cpNS}
	for _, n := range Nodes {
		names = append(names, n.ns())
	}
	if c.netnsBefore != nil {
		for ns := range namedNetns() {
			if strings.HasPrefix(ns, "cni-") && !c.netnsBefore[ns] {
				names = append(names, ns)
			}
		}
	}
	for _, ns := range names {
		if _, err := os.Stat("/run/netns/" + ns); err != nil {
			continue
		}
		if _, err := run("ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
