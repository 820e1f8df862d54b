package cluster

import (
	"fmt"
	"os"
)

// The link between the root namespace, where a test kube-apiserver listens, and a
// node namespace, where kproxy runs: a /30 from the link-local range, which no
// route of the machine sends anywhere else.
const (
	APIHostIP = "169.254.77.1" // root namespace end: the kube-apiserver's address
	APINodeIP = "169.254.77.2" // node end
)

// LinkRootToNode connects the root network namespace to the logical namespace node
// with a veth pair (APIHostIP on the root side, APINodeIP on the node side), so a
// program inside the node reaches a server bound to APIHostIP in the root namespace.
// The pair goes away with the node namespace; the returned func removes it earlier.
// Only one cluster per machine can hold the link at a time (the address is fixed).
func (c *Cluster) LinkRootToNode(node string) (remove func(), err error) {
	rootEnd := fmt.Sprintf("kpa%d", os.Getpid())
	if len(rootEnd) > 15 {
		rootEnd = rootEnd[:15]
	}
	if _, err := run("ip", "link", "add", rootEnd, "type", "veth", "peer", "name", "api0", "netns", c.NS(node)); err != nil {
		return nil, fmt.Errorf("cluster: veth root<->%s: %w", c.NS(node), err)
	}
	remove = func() { _, _ = run("ip", "link", "del", rootEnd) }
	steps := [][]string{
		{"ip", "addr", "add", APIHostIP + "/30", "dev", rootEnd},
		{"ip", "link", "set", rootEnd, "up"},
		{"ip", "-n", c.NS(node), "addr", "add", APINodeIP + "/30", "dev", "api0"},
		{"ip", "-n", c.NS(node), "link", "set", "api0", "up"},
	}
	for _, s := range steps {
		if _, err := run(s[0], s[1:]...); err != nil {
			remove()
			return nil, fmt.Errorf("cluster: link root<->%s: %w", c.NS(node), err)
		}
	}
	c.log.Logf("cluster: root namespace %s (%s) <-> %s api0 (%s)", rootEnd, APIHostIP, c.NS(node), APINodeIP)
	return remove, nil
}
