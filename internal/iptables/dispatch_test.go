package iptables

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kproxy/kproxy/internal/model"
)

func manyServices(n int) (*model.Snapshot, []*model.ServicePort) {
	ports := map[*model.ServicePort][]*model.Endpoint{}
	var list []*model.ServicePort
	for i := 0; i < n; i++ {
		sp := clusterIPPort(fmt.Sprintf("svc%05d", i), fmt.Sprintf("10.96.%d.%d", i/250, i%250+1))
		ports[sp] = []*model.Endpoint{ep(fmt.Sprintf("10.244.%d.%d", i/250, i%250+1), 80, "n")}
		list = append(list, sp)
	}
	return snapshotOf(ports), list
}

func TestTreeDepth(t *testing.T) {
	for _, c := range []struct{ n, want int }{{0, 0}, {64, 0}, {65, 3}, {1000, 6}, {10000, 10}, {1 << 30, maxDepth}} {
		if got := treeDepth(c.n); got != c.want {
			t.Errorf("treeDepth(%d) = %d, want %d", c.n, got, c.want)
		}
	}
}

func TestTreeDispatch(t *testing.T) {
	snap, list := manyServices(1000)
	rs := Build(BuildInput{Params: referenceParams(), Snapshot: snap})
	data := string(rs.Data())
	// KUBE-SERVICES holds only the jump into the tree and the NodePorts jump, last.
	var services []string
	for _, l := range strings.Split(data, "\n") {
		if strings.HasPrefix(l, "-A KUBE-SERVICES ") {
			services = append(services, l)
		}
	}
	if len(services) != 2 || !strings.HasSuffix(services[0], "-j KUBE-SVCT-R") || !strings.HasSuffix(services[1], "-j KUBE-NODEPORTS") {
		t.Fatalf("nat KUBE-SERVICES = %q", services)
	}
	depth := treeDepth(1000)
	// Each Service's rule sits in the leaf its address's low bits select, and the path
	// to that leaf tests exactly those bits.
	for _, sp := range []*model.ServicePort{list[0], list[517], list[999]} {
		ip := sp.ClusterIPs[0]
		leaf := treeChain(bucket(ip, depth), depth)
		want := fmt.Sprintf(`-A %s -m comment --comment "%s cluster IP" -m tcp -p tcp -d %s --dport 80 -j %s`, leaf, sp.Name, ip, chainsFor(sp).svc)
		mustContain(t, rs.Data(), want)
		if got := walkTree(t, data, ip, depth); got != leaf {
			t.Errorf("%s: the tree leads to %s, want %s", ip, got, leaf)
		}
	}
}

// walkTree follows the interior rules the way the kernel would, for one address.
func walkTree(t *testing.T, data string, ip netip.Addr, depth int) string {
	chain := treeChain(0, 0)
	for level := 0; level < depth; level++ {
		var rules []string
		for _, l := range strings.Split(data, "\n") {
			if strings.HasPrefix(l, "-A "+chain+" ") {
				rules = append(rules, l)
			}
		}
		if len(rules) != 2 {
			t.Fatalf("interior chain %s has rules %q", chain, rules)
		}
		// "-A C -d M/M -g X": matches when ip & M == M.
		f := strings.Fields(rules[0])
		mask := netip.MustParseAddr(strings.Split(f[3], "/")[0])
		if lowBits(ip)&lowBits(mask) == lowBits(mask) {
			chain = f[5]
		} else {
			chain = strings.Fields(rules[1])[3]
		}
	}
	return chain
}

func TestTreePartialSyncTouchesOneLeaf(t *testing.T) {
	snap, list := manyServices(1000)
	builder := NewBuilder()
	builder.Build(BuildInput{Params: referenceParams(), Snapshot: snap, Full: true})
	// One Service gets an externalIP: only the leaf of that address is rewritten.
	sp := *list[42]
	sp.ExternalIPs = []netip.Addr{netip.MustParseAddr("192.168.70.77")}
	nn := sp.Name.NamespacedName
	snap.Services[sp.Name] = &sp
	snap.PortsByService[nn] = []*model.ServicePort{&sp}
	snap.Changed = map[types.NamespacedName]struct{}{nn: {}}
	snap.PreviousPorts = map[types.NamespacedName][]*model.ServicePort{nn: {list[42]}}
	rs := builder.Build(BuildInput{Params: referenceParams(), Snapshot: snap})
	depth := treeDepth(1000)
	leaf := treeChain(bucket(netip.MustParseAddr("192.168.70.77"), depth), depth)
	var declared []string
	for _, l := range strings.Split(string(rs.Data()), "\n") {
		if strings.HasPrefix(l, ":KUBE-SVCT-") || l == ":KUBE-SERVICES - [0:0]" {
			declared = append(declared, l)
		}
	}
	if len(declared) != 1 || declared[0] != ":"+leaf+" - [0:0]" {
		t.Errorf("rewritten dispatch chains = %q, want only %s", declared, leaf)
	}
	if n := strings.Count(string(rs.Data()), "\n-A "); n > 40 {
		t.Errorf("a one-Service change wrote %d rules; want a leaf and the Service's chains", n)
	}
}

func TestTreeGrowsWithoutWaitingForAFullSync(t *testing.T) {
	snap, list := manyServices(300)
	small := snapshotOf(map[*model.ServicePort][]*model.Endpoint{list[0]: snap.Endpoints[list[0].Name]})
	builder := NewBuilder()
	builder.Build(BuildInput{Params: referenceParams(), Snapshot: small, Full: true})
	if builder.depth != 0 {
		t.Fatalf("one Service: depth %d, want flat", builder.depth)
	}
	// 299 more Services arrive in one partial sync: the tree is built at once.
	snap.Changed = map[types.NamespacedName]struct{}{}
	for _, sp := range list[1:] {
		snap.Changed[sp.Name.NamespacedName] = struct{}{}
	}
	rs := builder.Build(BuildInput{Params: referenceParams(), Snapshot: snap})
	if builder.depth != treeDepth(300) {
		t.Fatalf("depth %d after growing to 300 addresses, want %d", builder.depth, treeDepth(300))
	}
	mustContain(t, rs.Data(), ":KUBE-SERVICES - [0:0]", `-A KUBE-SERVICES -m comment --comment "kproxy service dispatch by destination address" -j KUBE-SVCT-R`)
	// A further one-Service change is partial again.
	snap.Changed = map[types.NamespacedName]struct{}{list[7].Name.NamespacedName: {}}
	snap.PreviousPorts = map[types.NamespacedName][]*model.ServicePort{list[7].Name.NamespacedName: {list[7]}}
	snap.Endpoints[list[7].Name] = []*model.Endpoint{ep("10.250.0.7", 80, "n")}
	rs = builder.Build(BuildInput{Params: referenceParams(), Snapshot: snap})
	mustNotContain(t, rs.Data(), ":KUBE-SERVICES", ":KUBE-SVCT-")
}
