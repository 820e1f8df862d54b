package cluster

import "fmt"

// ObjectYAML renders any Kubernetes API object (a *v1.Service, a *v1.Node, a
// *discoveryv1.EndpointSlice built by the test itself) as a manifest document, for
// tests that need fields the Service and EndpointSlice helpers do not carry.
func ObjectYAML(obj any) string { return mustYAML(obj) }

// AddBridgePod creates a pod namespace called name whose eth0 is plugged into a Linux
// bridge in node (made if missing, with gw/prefixLen as its address), the way bridge
// CNI plugins such as kubenet wire pods. It is for the BridgeInterface local-traffic
// detector, which the point-to-point pods of the fixed topology cannot exercise. The
// namespace is removed with the cluster.
func (c *Cluster) AddBridgePod(node, bridge, name, ip, gw string, prefixLen int) error {
	if _, err := c.Exec(node, "ip", "link", "show", bridge); err != nil {
		if err := c.ips(node,
			"link add "+bridge+" type bridge",
			fmt.Sprintf("addr add %s/%d dev %s", gw, prefixLen, bridge),
			"link set "+bridge+" up",
		); err != nil {
			return err
		}
	}
	if err := c.addNamespace(name); err != nil {
		return err
	}
	host := "vb-" + name
	if len(host) > 15 {
		host = host[:15]
	}
	if err := c.ips(node,
		fmt.Sprintf("link add %s type veth peer name eth0 netns %s", host, c.NS(name)),
		fmt.Sprintf("link set %s master %s up", host, bridge),
	); err != nil {
		return err
	}
	return c.ips(name,
		fmt.Sprintf("addr add %s/%d dev eth0", ip, prefixLen),
		"link set eth0 up",
		"route add default via "+gw,
	)
}
