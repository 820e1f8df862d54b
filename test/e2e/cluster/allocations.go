package cluster

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// stateFile is the part of kproxy's allocations.json the tests read: it tells the
// ClusterIPs and NodePorts kproxy allocated, whatever the proxy mode.
type stateFile struct {
	Owners map[string]struct {
		IPs   []string       `json:"ips"`
		Ports map[string]int `json:"ports"`
	} `json:"owners"`
}

// Allocation returns the IPs and NodePorts ("TCP/80" -> 30123) kproxy's standalone
// source allocated to the Service "namespace/name", from its state directory.
func (c *Cluster) Allocation(service string) (ips []string, nodePorts map[string]int, err error) {
	b, err := os.ReadFile(filepath.Join(c.StateDir, "allocations.json"))
	if err != nil {
		return nil, nil, err
	}
	var sf stateFile
	if err := json.Unmarshal(b, &sf); err != nil {
		return nil, nil, fmt.Errorf("allocations.json: %w", err)
	}
	o, ok := sf.Owners[service]
	if !ok {
		return nil, nil, fmt.Errorf("no allocation for %s yet", service)
	}
	return o.IPs, o.Ports, nil
}

// WaitAllocatedIP waits for the first ClusterIP allocated to "namespace/name".
func (c *Cluster) WaitAllocatedIP(service string, timeout time.Duration) (string, error) {
	var ip string
	err := c.WaitFor(func() error {
		ips, _, err := c.Allocation(service)
		if err != nil {
			return err
		}
		if len(ips) == 0 {
			return fmt.Errorf("%s has no ClusterIP allocated", service)
		}
		ip = ips[0]
		return nil
	}, timeout)
	return ip, err
}

// WaitAllocatedNodePort waits for the NodePort allocated to a Service port, given as
// "PROTOCOL/port" (e.g. "TCP/80").
func (c *Cluster) WaitAllocatedNodePort(service, protoPort string, timeout time.Duration) (int, error) {
	var port int
	err := c.WaitFor(func() error {
		_, ports, err := c.Allocation(service)
		if err != nil {
			return err
		}
		p, ok := ports[strings.ToUpper(protoPort)]
		if !ok {
			return fmt.Errorf("%s has no NodePort for %s (has %v)", service, protoPort, ports)
		}
		port = p
		return nil
	}, timeout)
	return port, err
}

// NFTListRuleset returns `nft list ruleset` inside a logical namespace.
func (c *Cluster) NFTListRuleset(ns string) string {
	out, err := c.Exec(ns, "nft", "list", "ruleset")
	if err != nil {
		return fmt.Sprintf("(nft list ruleset failed: %v)\n%s", err, out)
	}
	return out
}
