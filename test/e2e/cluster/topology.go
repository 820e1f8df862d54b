package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// LeftoverPattern matches the namespace names of this package's default prefix; the
// number is the pid of the run that made them.
var LeftoverPattern = regexp.MustCompile(`^kpe2e([0-9]+)-`)

// DefaultPrefix is "kpe2e<pid>-", unique among concurrent runs on one machine.
func DefaultPrefix() string { return fmt.Sprintf("kpe2e%d-", os.Getpid()) }

// hostIPs are the LAN members other than the bridge's own namespace.
var hostIPs = []struct{ name, ip string }{
	{"ext", ExtIP},
	{"node1", Node1IP},
	{"node2", Node2IP},
}

// build creates the namespaces, links and routes. Sysctls are set before interfaces
// are made so that the "default" values apply to every new interface too.
func (c *Cluster) build() error {
	names := []string{"lan", "ext", "node1", "node2"}
	for _, p := range Pods {
		names = append(names, p.Name)
	}
	for _, n := range names {
		if err := c.addNamespace(n); err != nil {
			return err
		}
	}
	for _, n := range []string{"lan", "node1", "node2"} {
		if err := c.sysctl(n, "net.ipv4.ip_forward=1"); err != nil {
			return err
		}
	}
	if err := c.buildLAN(); err != nil {
		return err
	}
	for _, p := range Pods {
		if err := c.buildPod(p); err != nil {
			return err
		}
	}
	if err := c.buildRoutes(); err != nil {
		return err
	}
	return c.buildIPv6()
}

func (c *Cluster) addNamespace(name string) error {
	full := c.NS(name)
	if _, err := run("ip", "netns", "add", full); err != nil {
		return fmt.Errorf("cluster: create namespace %s: %w", full, err)
	}
	c.mu.Lock()
	c.created = append(c.created, full)
	c.mu.Unlock()
	// rp_filter off: replies of masqueraded and hairpin traffic come back on other
	// interfaces than a strict reverse-path check expects. icmp_ratemask 0: REJECT
	// answers must not be rate limited, or "refused" turns into "timeout" in tests
	// that send many requests.
	if err := c.sysctl(name,
		"net.ipv4.conf.all.rp_filter=0",
		"net.ipv4.conf.default.rp_filter=0",
		"net.ipv4.icmp_ratemask=0",
	); err != nil {
		return err
	}
	return c.ip(name, "link set lo up")
}

func (c *Cluster) sysctl(ns string, settings ...string) error {
	args := append([]string{"sysctl", "-q", "-w"}, settings...)
	if _, err := c.Exec(ns, args...); err != nil {
		return fmt.Errorf("cluster: sysctl in %s: %w", c.NS(ns), err)
	}
	return nil
}

// ip runs one "ip" command (given as a space-separated string) in a namespace.
func (c *Cluster) ip(ns string, command string) error {
	args := append([]string{"-n", c.NS(ns)}, strings.Fields(command)...)
	if _, err := run("ip", args...); err != nil {
		return fmt.Errorf("cluster: in %s: %w", c.NS(ns), err)
	}
	return nil
}

func (c *Cluster) ips(ns string, commands ...string) error {
	for _, cmd := range commands {
		if err := c.ip(ns, cmd); err != nil {
			return err
		}
	}
	return nil
}

// buildLAN makes the bridge and plugs ext, node1 and node2 into it. The lan namespace
// also owns 192.168.50.254, the nodes' default gateway: a dead end that answers
// anything routed to it with ICMP net unreachable, so traffic to a Service that has
// no rules fails fast and visibly ("unreachable") instead of leaving the namespaces.
func (c *Cluster) buildLAN() error {
	if err := c.ips("lan",
		"link add br0 type bridge",
		"addr add "+LANDeadEnd+"/24 dev br0",
		"link set br0 up",
		// A veth pair stands in for a dummy device (the dummy module may be absent).
		"link add dead0 type veth peer name dead1",
		"link set dead1 up",
		"link set dead0 up",
		"route add default dev dead0",
		// The ICMP errors must find their way back to pods.
		"route add 10.244.1.0/24 via "+Node1IP,
		"route add 10.244.2.0/24 via "+Node2IP,
	); err != nil {
		return err
	}
	if _, err := c.Exec("lan", "iptables", "-A", "FORWARD", "-o", "dead0", "-j", "REJECT", "--reject-with", "icmp-net-unreachable"); err != nil {
		return fmt.Errorf("cluster: dead-end rule in %s: %w", c.NS("lan"), err)
	}
	for _, h := range hostIPs {
		if err := c.ips("lan",
			fmt.Sprintf("link add %s type veth peer name eth0 netns %s", h.name, c.NS(h.name)),
			fmt.Sprintf("link set %s master br0 up", h.name),
		); err != nil {
			return err
		}
		if err := c.ips(h.name,
			"addr add "+h.ip+"/24 dev eth0",
			"link set eth0 up",
		); err != nil {
			return err
		}
	}
	return nil
}

// podGateway is the address a node puts on every pod veth (like kindnet's ptp setup).
func podGateway(node string) string {
	if node == "node1" {
		return Node1PodGW
	}
	return Node2PodGW
}

// buildPod connects a pod to its node with a point-to-point veth: the pod has its /32
// and a default route via the node's end; the node has a /32 route to the pod. A pod
// reaching itself through a Service goes out and back over the same veth, so hairpin
// needs no bridge setting.
func (c *Cluster) buildPod(p Pod) error {
	veth := "v-" + strings.TrimPrefix(p.Name, "pod-")
	gw := podGateway(p.Node)
	if err := c.ips(p.Node,
		fmt.Sprintf("link add %s type veth peer name eth0 netns %s", veth, c.NS(p.Name)),
		fmt.Sprintf("addr add %s/32 dev %s", gw, veth),
		fmt.Sprintf("link set %s up", veth),
	); err != nil {
		return err
	}
	if err := c.ips(p.Name,
		"addr add "+p.IP+"/32 dev eth0",
		"link set eth0 up",
		"route add "+gw+" dev eth0 scope link",
		"route add default via "+gw+" dev eth0",
	); err != nil {
		return err
	}
	return c.ip(p.Node, fmt.Sprintf("route add %s/32 dev %s", p.IP, veth))
}

func (c *Cluster) buildRoutes() error {
	if err := c.ips("ext",
		"route add "+ServiceCIDR+" via "+Node1IP,
		"route add "+LBRange+" via "+Node1IP,
		"route add "+ExtIPRange+" via "+Node1IP,
		"route add "+ClusterCIDR+" via "+Node1IP,
	); err != nil {
		return err
	}
	if err := c.ips("node1",
		"route add default via "+LANDeadEnd,
		"route add 10.244.2.0/24 via "+Node2IP,
	); err != nil {
		return err
	}
	return c.ips("node2",
		"route add default via "+LANDeadEnd,
		"route add 10.244.1.0/24 via "+Node1IP,
	)
}

// startPods runs echoserver in every pod and waits until each has bound its ports.
func (c *Cluster) startPods() error {
	tcp := joinInts(c.opts.TCPPorts)
	udp := joinInts(c.opts.UDPPorts)
	for _, p := range Pods {
		proc, err := c.StartProcess(p.Name, "echo-"+p.Name, c.opts.EchoBin, "serve", "--name", p.Name, "--tcp", tcp, "--udp", udp)
		if err != nil {
			return err
		}
		err = c.WaitFor(func() error {
			if !proc.Running() {
				return fmt.Errorf("echoserver in %s exited: %s", p.Name, proc.Logs())
			}
			if !strings.Contains(proc.Logs(), "ready ") {
				return fmt.Errorf("echoserver in %s not ready yet", p.Name)
			}
			return nil
		}, 10*time.Second)
		if err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
	}
	return nil
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}

// deleteNamespace ends the processes still inside a namespace (only ever the ones
// this package started there) and then deletes it.
func deleteNamespace(full string) error {
	out, _ := run("ip", "netns", "pids", full)
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil {
			if p, err := os.FindProcess(pid); err == nil {
				_ = p.Kill()
			}
		}
	}
	if _, err := run("ip", "netns", "del", full); err != nil {
		return fmt.Errorf("delete namespace %s: %w", full, err)
	}
	return nil
}

// RemoveLeftovers deletes namespaces that earlier runs of this package left behind
// when they crashed: names matching LeftoverPattern whose pid is no longer running.
// Namespaces of runs still alive are left alone, so parallel runs do not clash.
func RemoveLeftovers(log Logger) {
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	for _, e := range entries {
		m := LeftoverPattern.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(filepath.Join("/proc", m[1])); err == nil {
			continue // that run is still going (or its pid was reused: leave it)
		}
		if err := deleteNamespace(e.Name()); err != nil {
			log.Logf("cluster: leftover: %v", err)
		} else {
			log.Logf("cluster: removed leftover namespace %s", e.Name())
		}
	}
}
