package scale

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// Fake endpoints live in 10.244.128.0/17, which node1 routes to the sink namespace.
// The sink owns that whole range as local addresses (an AnyIP route), and one
// responder answers on port 80 of every address with "sink-<address>": so every
// fake endpoint answers real packets, and an answer names the exact endpoint the
// proxy chose. The benchmark uses that to detect programming without ambiguity.
const (
	sinkRange     = "10.244.128.0/17"
	sinkNodeIP    = "169.254.78.1" // node1's end of the node1<->sink link
	sinkIP        = "169.254.78.2"
	fakeBase      = "10.244.128.0" // initial fake endpoints: 10.244.128.0/18
	fakeCount     = 1 << 14
	markerBase    = "10.244.192.0" // one-off addresses for detected changes: 10.244.192.0/18
	markerCount   = 1 << 14
	sinkNamespace = "sink"
)

// run executes a command and folds its output into the error.
func run(name string, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

func runAll(cmds [][]string) error {
	for _, c := range cmds {
		if _, err := run(c[0], c[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// apiLinkAddrs picks the /30 that links the root namespace (where the API server
// listens) to node1. It is derived from the pid, not the fixed address of
// cluster.LinkRootToNode, so the benchmark can run while e2e tests hold that one.
func apiLinkAddrs() (host, node string) {
	third := 100 + os.Getpid()%150
	return fmt.Sprintf("169.254.%d.1", third), fmt.Sprintf("169.254.%d.2", third)
}

// linkAPI connects the root namespace to node1 with a veth pair; the returned func
// removes it (deleting node1 removes it too).
func linkAPI(c *cluster.Cluster) (hostIP string, remove func(), err error) {
	hostIP, nodeIP := apiLinkAddrs()
	rootEnd := fmt.Sprintf("kpb%d", os.Getpid())
	if len(rootEnd) > 15 {
		rootEnd = rootEnd[:15]
	}
	node := c.NS(cluster.KproxyNode)
	if _, err := run("ip", "link", "add", rootEnd, "type", "veth", "peer", "name", "api0", "netns", node); err != nil {
		return "", nil, fmt.Errorf("bench: veth root<->%s: %w", node, err)
	}
	remove = func() { _, _ = run("ip", "link", "del", rootEnd) }
	err = runAll([][]string{
		{"ip", "addr", "add", hostIP + "/30", "dev", rootEnd},
		{"ip", "link", "set", rootEnd, "up"},
		{"ip", "-n", node, "addr", "add", nodeIP + "/30", "dev", "api0"},
		{"ip", "-n", node, "link", "set", "api0", "up"},
	})
	if err != nil {
		remove()
		return "", nil, fmt.Errorf("bench: link root<->%s: %w", node, err)
	}
	return hostIP, remove, nil
}

// sink is the namespace that answers for every fake endpoint.
type sink struct {
	ns     string
	thread *nsThread
	ln     net.Listener
	wg     sync.WaitGroup
}

func newSink(c *cluster.Cluster) (*sink, error) {
	s := &sink{ns: c.NS(sinkNamespace)}
	node := c.NS(cluster.KproxyNode)
	if _, err := run("ip", "netns", "add", s.ns); err != nil {
		return nil, fmt.Errorf("bench: sink namespace: %w", err)
	}
	err := runAll([][]string{
		{"ip", "netns", "exec", s.ns, "sysctl", "-q", "-w", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"},
		{"ip", "-n", s.ns, "link", "set", "lo", "up"},
		{"ip", "-n", node, "link", "add", "vsink", "type", "veth", "peer", "name", "eth0", "netns", s.ns},
		{"ip", "-n", node, "addr", "add", sinkNodeIP + "/30", "dev", "vsink"},
		{"ip", "-n", node, "link", "set", "vsink", "up"},
		{"ip", "-n", node, "route", "add", sinkRange, "via", sinkIP},
		{"ip", "-n", s.ns, "addr", "add", sinkIP + "/30", "dev", "eth0"},
		{"ip", "-n", s.ns, "link", "set", "eth0", "up"},
		{"ip", "-n", s.ns, "route", "add", "default", "via", sinkNodeIP},
		{"ip", "-n", s.ns, "route", "add", "local", sinkRange, "dev", "lo"},
	})
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("bench: sink: %w", err)
	}
	if s.thread, err = enterNS(s.ns); err != nil {
		s.Close()
		return nil, err
	}
	s.thread.Do(func() { s.ln, err = net.Listen("tcp", ":80") })
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("bench: sink listener: %w", err)
	}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// serve answers every connection with "sink-<local address> <peer>", like the echo
// pods answer "<pod name> <peer>".
func (s *sink) serve() {
	defer s.wg.Done()
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer func() { _ = conn.Close() }()
			local, _, _ := net.SplitHostPort(conn.LocalAddr().String())
			_, _ = fmt.Fprintf(conn, "sink-%s %s\n", local, conn.RemoteAddr())
		}()
	}
}

// Close stops the responder and deletes the namespace.
func (s *sink) Close() {
	if s.ln != nil {
		_ = s.ln.Close()
		s.wg.Wait()
	}
	if s.thread != nil {
		s.thread.Close()
	}
	_, _ = run("ip", "netns", "del", s.ns)
}

// nthAddr returns base + n as a dotted IPv4 address.
func nthAddr(base string, n int) string {
	ip := net.ParseIP(base).To4()
	v := uint32(ip[0])<<24 | uint32(ip[1])<<16 | uint32(ip[2])<<8 | uint32(ip[3])
	v += uint32(n)
	return net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v)).String()
}
