package cluster

import (
	"fmt"
	"strings"
)

// IPv6 addresses of the topology: every link carries both families, so dual-stack
// Services can be tested with real packets. The layout mirrors the IPv4 one.
const (
	ExtIP6       = "fd00:50::100"
	Node1IP6     = "fd00:50::1"
	Node2IP6     = "fd00:50::2"
	LANDeadEnd6  = "fd00:50::fe"
	ClusterCIDR6 = "fd00:10:244::/56"
	ServiceCIDR6 = "fd00:10:96::/112"
	LBRange6     = "fd00:60::/64"
	ExtIPRange6  = "fd00:70::/64"
	Node1PodGW6  = "fd00:10:244:1::1"
	Node2PodGW6  = "fd00:10:244:2::1"
)

// PodIP6 is a pod's IPv6 address: 10.244.N.M becomes fd00:10:244:N::M (the same
// digits, read as hex), so the two addresses of a pod are easy to match up by eye.
func PodIP6(p Pod) string {
	parts := strings.Split(p.IP, ".")
	return fmt.Sprintf("fd00:10:244:%s::%s", parts[2], parts[3])
}

// PodCIDR6 is the IPv6 pod CIDR of a node ("node1" or "node2").
func PodCIDR6(node string) string {
	if node == "node1" {
		return "fd00:10:244:1::/64"
	}
	return "fd00:10:244:2::/64"
}

func podGateway6(node string) string {
	if node == "node1" {
		return Node1PodGW6
	}
	return Node2PodGW6
}

var hostIPs6 = map[string]string{"ext": ExtIP6, "node1": Node1IP6, "node2": Node2IP6}

// buildIPv6 adds the IPv6 half of the topology on top of the IPv4 links build made.
// Addresses are added with nodad: duplicate address detection would leave them
// "tentative" (unusable) for a second or more after creation.
func (c *Cluster) buildIPv6() error {
	for _, n := range []string{"lan", "node1", "node2"} {
		if err := c.sysctl(n, "net.ipv6.conf.all.forwarding=1"); err != nil {
			return err
		}
	}
	if err := c.ips("lan",
		"addr add "+LANDeadEnd6+"/64 dev br0 nodad",
		"-6 route add default dev dead0",
		"-6 route add fd00:10:244:1::/64 via "+Node1IP6,
		"-6 route add fd00:10:244:2::/64 via "+Node2IP6,
	); err != nil {
		return err
	}
	// Like IPv4: whatever reaches the dead end is answered "unreachable". Without
	// ip6tables it silently vanishes instead, which only turns errors into timeouts.
	if _, err := c.Exec("lan", "ip6tables", "-A", "FORWARD", "-o", "dead0", "-j", "REJECT", "--reject-with", "icmp6-addr-unreachable"); err != nil {
		c.log.Logf("cluster: no IPv6 dead-end rule in %s: %v", c.NS("lan"), err)
	}
	for _, h := range hostIPs {
		if err := c.ip(h.name, "addr add "+hostIPs6[h.name]+"/64 dev eth0 nodad"); err != nil {
			return err
		}
	}
	for _, p := range Pods {
		veth := "v-" + strings.TrimPrefix(p.Name, "pod-")
		gw := podGateway6(p.Node)
		if err := c.ip(p.Node, fmt.Sprintf("addr add %s/128 dev %s nodad", gw, veth)); err != nil {
			return err
		}
		if err := c.ips(p.Name,
			"addr add "+PodIP6(p)+"/128 dev eth0 nodad",
			"-6 route add "+gw+" dev eth0",
			"-6 route add default via "+gw+" dev eth0",
		); err != nil {
			return err
		}
		if err := c.ip(p.Node, fmt.Sprintf("-6 route add %s/128 dev %s", PodIP6(p), veth)); err != nil {
			return err
		}
	}
	if err := c.ips("ext",
		"-6 route add "+ServiceCIDR6+" via "+Node1IP6,
		"-6 route add "+LBRange6+" via "+Node1IP6,
		"-6 route add "+ExtIPRange6+" via "+Node1IP6,
		"-6 route add "+ClusterCIDR6+" via "+Node1IP6,
	); err != nil {
		return err
	}
	if err := c.ips("node1",
		"-6 route add default via "+LANDeadEnd6,
		"-6 route add "+PodCIDR6("node2")+" via "+Node2IP6,
	); err != nil {
		return err
	}
	return c.ips("node2",
		"-6 route add default via "+LANDeadEnd6,
		"-6 route add "+PodCIDR6("node1")+" via "+Node1IP6,
	)
}
