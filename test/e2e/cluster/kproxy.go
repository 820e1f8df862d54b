package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// KproxyNode is the node kproxy runs on; node2 has no proxy.
const KproxyNode = "node1"

// KproxyFlags are the standard standalone-mode flags for this cluster.
func (c *Cluster) KproxyFlags() []string {
	return []string{
		"--manifests", c.ManifestDir,
		"--state-dir", c.StateDir,
		"--hostname-override", KproxyNode,
		"--cluster-cidr", ClusterCIDR,
		"--service-cluster-ip-range", ServiceCIDR,
		"--service-node-port-range", "30000-32767",
		"--proxy-mode", "iptables",
		"--iptables-min-sync-period", "100ms",
		"--healthz-bind-address", "127.0.0.1:10256",
		"--metrics-bind-address", "127.0.0.1:10249",
		"-v", "2",
	}
}

// StartKproxy runs kproxy inside node1 with the standard flags followed by args.
func (c *Cluster) StartKproxy(args ...string) (*Process, error) {
	if c.opts.KproxyBin == "" {
		return nil, fmt.Errorf("cluster: Options.KproxyBin is not set")
	}
	p, err := c.StartProcess(KproxyNode, "kproxy", c.opts.KproxyBin, append(c.KproxyFlags(), args...)...)
	if err != nil {
		return nil, err
	}
	c.log.Logf("cluster: kproxy started in %s (pid %d), log %s", c.NS(KproxyNode), p.Pid(), p.LogPath)
	return p, nil
}

// RunKproxyCleanup runs "kproxy --cleanup" in node1 and returns its output and exit
// error (nil for status 0).
func (c *Cluster) RunKproxyCleanup() (string, error) {
	cmd := exec.Command("ip", "netns", "exec", c.NS(KproxyNode), c.opts.KproxyBin, "--cleanup", "-v", "2")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// IPTablesSave returns "iptables-save -c" of a namespace (or the error text).
func (c *Cluster) IPTablesSave(ns string) string {
	out, err := c.Exec(ns, "iptables-save", "-c")
	if err != nil {
		return fmt.Sprintf("iptables-save in %s failed: %v", c.NS(ns), err)
	}
	return out
}

// KubeChains lists the KUBE-* chain declarations (":KUBE-..." lines) in an
// iptables-save dump, with their table.
func KubeChains(dump string) []string {
	var chains []string
	table := ""
	for _, line := range strings.Split(dump, "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			table = line[1:]
		case strings.HasPrefix(line, ":KUBE-"):
			chains = append(chains, table+" "+strings.Fields(line)[0][1:])
		}
	}
	return chains
}

// RulesMatching returns the lines of an iptables-save dump that contain substr.
func RulesMatching(dump, substr string) string {
	var b strings.Builder
	for _, line := range strings.Split(dump, "\n") {
		if strings.Contains(line, substr) {
			b.WriteString(line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

var (
	destRE  = regexp.MustCompile(`(?:^| )-d ([0-9a-f.:]+)(?:/(?:32|128))? `)
	dportRE = regexp.MustCompile(`--dport ([0-9]+)`)
)

// commentMatches reports whether an iptables-save line carries exactly the comment
// want (iptables-save quotes comments that contain spaces).
func commentMatches(line, want string) bool {
	return strings.Contains(line, `--comment "`+want+`"`) || strings.Contains(line, "--comment "+want+" ")
}

// ServiceClusterIP finds the ClusterIP kproxy programmed for a service port, given in
// upstream's "ns/name:port" form ("ns/name" for an unnamed port).
func (c *Cluster) ServiceClusterIP(svcPort string) (string, error) {
	ip, ok := ClusterIPInDump(c.IPTablesSave(KproxyNode), svcPort)
	if !ok {
		return "", fmt.Errorf("no cluster IP rule for %s in iptables-save of %s", svcPort, c.NS(KproxyNode))
	}
	return ip, nil
}

// ServiceNodePort finds the NodePort kproxy programmed for a service port.
func (c *Cluster) ServiceNodePort(svcPort string) (int, error) {
	port, ok := NodePortInDump(c.IPTablesSave(KproxyNode), svcPort)
	if !ok {
		return 0, fmt.Errorf("no NodePort rule for %s in iptables-save of %s", svcPort, c.NS(KproxyNode))
	}
	return port, nil
}

// ClusterIPInDump reads a service port's ClusterIP from an iptables-save dump: the
// -d of its "<svc> cluster IP" rule (nat) or "<svc> has no endpoints" rule (filter)
// in KUBE-SERVICES.
func ClusterIPInDump(dump, svcPort string) (string, bool) {
	for _, line := range strings.Split(dump, "\n") {
		if !strings.Contains(line, "-A KUBE-SERVICES ") {
			continue
		}
		if !commentMatches(line, svcPort+" cluster IP") && !commentMatches(line, svcPort+" has no endpoints") {
			continue
		}
		if m := destRE.FindStringSubmatch(line); m != nil {
			return m[1], true
		}
	}
	return "", false
}

// NodePortInDump reads a service port's NodePort from an iptables-save dump: the
// --dport of its KUBE-NODEPORTS rule, or of its "has no endpoints" rule for local
// destinations in KUBE-EXTERNAL-SERVICES.
func NodePortInDump(dump, svcPort string) (int, bool) {
	for _, line := range strings.Split(dump, "\n") {
		nodePorts := strings.Contains(line, "-A KUBE-NODEPORTS ") && commentMatches(line, svcPort)
		rejected := strings.Contains(line, "-A KUBE-EXTERNAL-SERVICES ") && commentMatches(line, svcPort+" has no endpoints") &&
			strings.Contains(line, "--dst-type LOCAL")
		if !nodePorts && !rejected {
			continue
		}
		if m := dportRE.FindStringSubmatch(line); m != nil {
			if port, err := strconv.Atoi(m[1]); err == nil {
				return port, true
			}
		}
	}
	return 0, false
}

// WaitClusterIP waits until kproxy has programmed a ClusterIP for svcPort.
func (c *Cluster) WaitClusterIP(svcPort string, timeout time.Duration) (string, error) {
	var ip string
	err := c.WaitFor(func() (err error) {
		ip, err = c.ServiceClusterIP(svcPort)
		return err
	}, timeout)
	return ip, err
}

// WaitNodePort waits until kproxy has programmed a NodePort for svcPort.
func (c *Cluster) WaitNodePort(svcPort string, timeout time.Duration) (int, error) {
	var port int
	err := c.WaitFor(func() (err error) {
		port, err = c.ServiceNodePort(svcPort)
		return err
	}, timeout)
	return port, err
}

// StateFiles returns the names and contents of the files in kproxy's state dir, for
// failure messages and for tests of persisted allocations.
func (c *Cluster) StateFiles() map[string]string {
	out := map[string]string{}
	entries, err := os.ReadDir(c.StateDir)
	if err != nil {
		return out
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		if b, err := os.ReadFile(c.StateDir + "/" + e.Name()); err == nil {
			out[e.Name()] = string(b)
		}
	}
	return out
}
