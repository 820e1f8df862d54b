package nodeaddr

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/kproxy/kproxy/internal/model"
)

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

// The node's parameters come from one place: the Node object first, the interfaces
// where the setting needs them, and they follow both at every Resolve.
func TestResolve(t *testing.T) {
	local := addrs("127.0.0.1", "10.0.2.15", "192.168.81.1", "::1", "fe80::1", "fd00::15")
	node := &model.Node{Name: "n1", Addresses: addrs("192.168.81.1", "fd00::81"),
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("fd00:244:1::/64")}}
	cases := []struct {
		name      string
		nodePorts string
		detect    DetectLocal
		node      *model.Node
		want4     string
		want6     string
	}{
		{name: "primary follows the Node object, not the first interface", nodePorts: "primary", node: node,
			detect: DetectLocal{ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}},
			want4:  "ips=[192.168.81.1] primary=192.168.81.1 all=false nodeports=[192.168.81.1] local=cidr:10.244.0.0/16",
			want6:  "ips=[fd00::81] primary=fd00::81 all=false nodeports=[fd00::81] local=none"},
		{name: "primary without a Node: first global unicast interface address", nodePorts: "primary", node: nil,
			want4: "ips=[] primary=10.0.2.15 all=false nodeports=[10.0.2.15] local=none",
			want6: "ips=[] primary=fd00::15 all=false nodeports=[fd00::15] local=none"},
		{name: "CIDRs select interface addresses; NodeCIDR follows podCIDRs", nodePorts: "10.0.0.0/8,fd00::/64", node: node,
			detect: DetectLocal{Mode: "NodeCIDR"},
			want4:  "ips=[192.168.81.1] primary=192.168.81.1 all=false nodeports=[10.0.2.15] local=cidr:10.244.1.0/24",
			want6:  "ips=[fd00::81] primary=fd00::81 all=false nodeports=[fd00::15] local=cidr:fd00:244:1::/64"},
		{name: "all; interface detectors are the same for both families", nodePorts: "all", node: node,
			detect: DetectLocal{Mode: "BridgeInterface", BridgeInterface: "cni0"},
			want4:  "ips=[192.168.81.1] primary=192.168.81.1 all=true nodeports=[] local=iface:cni0",
			want6:  "ips=[fd00::81] primary=fd00::81 all=true nodeports=[] local=iface:cni0"},
		{name: "localhost", nodePorts: "localhost", node: node, detect: DetectLocal{Mode: "InterfaceNamePrefix", InterfacePrefix: "veth"},
			want4: "ips=[192.168.81.1] primary=192.168.81.1 all=false nodeports=[127.0.0.1] local=prefix:veth",
			want6: "ips=[fd00::81] primary=fd00::81 all=false nodeports=[::1] local=prefix:veth"},
		{name: "NodeCIDR without podCIDRs detects nothing", nodePorts: "all", node: &model.Node{Name: "n1"}, detect: DetectLocal{Mode: "NodeCIDR"},
			want4: "ips=[] primary=10.0.2.15 all=true nodeports=[] local=none",
			want6: "ips=[] primary=fd00::15 all=true nodeports=[] local=none"},
	}
	show := func(np model.NodeParams) string {
		l := "none"
		switch {
		case np.LocalTraffic.CIDR.IsValid():
			l = "cidr:" + np.LocalTraffic.CIDR.String()
		case np.LocalTraffic.Interface != "":
			l = "iface:" + np.LocalTraffic.Interface
		case np.LocalTraffic.InterfacePrefix != "":
			l = "prefix:" + np.LocalTraffic.InterfacePrefix
		}
		ips := fmt.Sprint(np.IPs)
		if np.IPs == nil {
			ips = "[]"
		}
		nps := fmt.Sprint(np.NodePortIPs)
		if np.NodePortIPs == nil {
			nps = "[]"
		}
		return fmt.Sprintf("ips=%s primary=%s all=%v nodeports=%s local=%s", ips, np.PrimaryIP, np.NodePortAll, nps, l)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := &Resolver{NodePorts: MustParse(c.nodePorts), DetectLocal: c.detect, LocalAddrs: func() ([]netip.Addr, error) { return local, nil }}
			got := r.Resolve(c.node)
			if s := show(got[model.IPv4]); s != c.want4 {
				t.Errorf("IPv4:\n got %s\nwant %s", s, c.want4)
			}
			if s := show(got[model.IPv6]); s != c.want6 {
				t.Errorf("IPv6:\n got %s\nwant %s", s, c.want6)
			}
		})
	}
}

// An interface listing that fails still gives the Node object's parameters.
func TestResolveWithoutInterfaces(t *testing.T) {
	r := &Resolver{NodePorts: MustParse("primary"), LocalAddrs: func() ([]netip.Addr, error) { return nil, errors.New("netlink: boom") }}
	got := r.Resolve(&model.Node{Name: "n1", Addresses: addrs("192.168.81.1")})
	if np := got[model.IPv4]; np.PrimaryIP.String() != "192.168.81.1" || fmt.Sprint(np.NodePortIPs) != "[192.168.81.1]" {
		t.Errorf("IPv4 params %+v, want the Node's address as primary and NodePort address", np)
	}
}
