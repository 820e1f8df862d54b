package ipvs

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/kproxy/kproxy/internal/model"
)

// setDef is one ipset this backend keeps: its base name, ipset type and what it is for.
type setDef struct {
	base, kind, comment string
}

// setDefs are upstream's ipsets, in the order they are written.
var setDefs = []setDef{
	{setLoopBack, "hash:ip,port,ip", "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose"},
	{setClusterIP, "hash:ip,port", "Kubernetes service cluster ip + port for masquerade purpose"},
	{setExternalIP, "hash:ip,port", "Kubernetes service external ip + port for masquerade and filter purpose"},
	{setExternalIPLocal, "hash:ip,port", "Kubernetes service external ip + port with externalTrafficPolicy=local"},
	{setLoadBalancer, "hash:ip,port", "Kubernetes service lb portal"},
	{setLoadBalancerFW, "hash:ip,port", "Kubernetes service load balancer ip + port for load balancer with sourceRange"},
	{setLoadBalancerLocal, "hash:ip,port", "Kubernetes service load balancer ip + port with externalTrafficPolicy=local"},
	{setLBSourceIP, "hash:ip,port,ip", "Kubernetes service load balancer ip + port + source IP for packet filter purpose"},
	{setLBSourceCIDR, "hash:ip,port,net", "Kubernetes service load balancer ip + port + source cidr for packet filter purpose"},
	{setNodePortTCP, "bitmap:port", "Kubernetes nodeport TCP port for masquerade purpose"},
	{setNodePortLocalTCP, "bitmap:port", "Kubernetes nodeport TCP port with externalTrafficPolicy=local"},
	{setNodePortUDP, "bitmap:port", "Kubernetes nodeport UDP port for masquerade purpose"},
	{setNodePortLocalUDP, "bitmap:port", "Kubernetes nodeport UDP port with externalTrafficPolicy=local"},
	{setNodePortSCTP, "hash:ip,port", "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'"},
	{setNodePortLocalSCTP, "hash:ip,port", "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'"},
	{setHealthCheckNodePort, "bitmap:port", "Kubernetes health check node port"},
	{setIPVSIPs, "hash:ip", "Addresses that have ipvs (kube-ipvs0)"},
}

// Sets holds the desired members of every set of one family, by set name.
type Sets map[string][]string

func newSets(f model.Family) Sets {
	s := Sets{}
	for _, d := range setDefs {
		s[setName(f, d.base)] = nil
	}
	return s
}

// entry formats: "ip,proto:port" and friends, as ipset spells them.
func ipPort(ip netip.Addr, proto string, port int32) string {
	return fmt.Sprintf("%s,%s:%d", ip, proto, port)
}

// normalize sorts and de-duplicates every member list so plans compare by value.
func (s Sets) normalize() {
	for name, members := range s {
		sort.Strings(members)
		out := members[:0]
		for i, m := range members {
			if i == 0 || m != members[i-1] {
				out = append(out, m)
			}
		}
		s[name] = out
	}
}

// createLine is the "create" command of a set: hash sets carry the family, bitmap
// port sets the whole port range.
func createLine(f model.Family, d setDef, name string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "create %s %s", name, d.kind)
	if strings.HasPrefix(d.kind, "bitmap:") {
		b.WriteString(" range 0-65535")
	} else {
		fam := "inet"
		if f == model.IPv6 {
			fam = "inet6"
		}
		fmt.Fprintf(&b, " family %s hashsize 1024 maxelem 65536", fam)
	}
	fmt.Fprintf(&b, " comment")
	return b.String()
}

// tempSet is the scratch set a new content is built in before it is swapped in;
// one per position, so several sets can be rebuilt in one restore.
func tempSet(f model.Family, i int) string { return fmt.Sprintf("KPROXY-TMP-%d-%d", f, i) }

// SetsRestore returns the "ipset restore -exist" input that makes the kernel's sets
// hold want: every set is created if missing, and each set in changed is rebuilt in
// a scratch set and swapped in, so readers never see it half filled.
func SetsRestore(f model.Family, want Sets, changed map[string]bool) []byte {
	var b strings.Builder
	for i, d := range setDefs {
		name := setName(f, d.base)
		b.WriteString(createLine(f, d, name) + "\n")
		if !changed[name] {
			continue
		}
		tmp := tempSet(f, i)
		b.WriteString(createLine(f, d, tmp) + "\n")
		fmt.Fprintf(&b, "flush %s\n", tmp)
		for _, m := range want[name] {
			fmt.Fprintf(&b, "add %s %s\n", tmp, m)
		}
		fmt.Fprintf(&b, "swap %s %s\n", tmp, name)
		fmt.Fprintf(&b, "destroy %s\n", tmp)
	}
	return []byte(b.String())
}

// changedSets lists the sets whose members differ between two plans (all of them
// when old is nil).
func changedSets(old, want Sets) map[string]bool {
	out := map[string]bool{}
	for name, members := range want {
		prev, ok := old[name]
		if !ok || strings.Join(prev, "\n") != strings.Join(members, "\n") {
			out[name] = true
		}
	}
	return out
}
