// Package allocator hands out ClusterIPs and NodePorts the way the API server does,
// for kproxy's standalone mode where no API server exists. Every owner (a Service,
// "namespace/name") holds at most one IP per family and one nodePort per port key;
// nothing is ever held by two owners. With a state directory, the allocations are
// persisted after every change, so a restart gives every Service the same addresses.
package allocator

import (
	"fmt"
	"k8s.io/klog/v2"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kproxy/kproxy/internal/model"
)

// holding is what one owner holds.
type holding struct {
	ips   map[model.Family]netip.Addr
	ports map[string]int // port key -> nodePort; several keys may share one port
}

func (h *holding) clone() *holding {
	if h == nil {
		return nil
	}
	return &holding{ips: maps.Clone(h.ips), ports: maps.Clone(h.ports)}
}

func (h *holding) equal(o *holding) bool {
	if h == nil || o == nil {
		return h.empty() && o.empty()
	}
	return maps.Equal(h.ips, o.ips) && maps.Equal(h.ports, o.ports)
}

func (h *holding) empty() bool { return h == nil || (len(h.ips) == 0 && len(h.ports) == 0) }

// Allocator is safe for concurrent use. Every exported method is atomic: it either
// applies completely (and is persisted) or not at all.
type Allocator struct {
	mu     sync.Mutex
	ranges []*ipRange
	ports  *portPool
	owners map[string]*holding
	store  *store // nil without a state directory
}

// Open returns an Allocator over the given service CIDRs and node port range. With a
// non-empty stateDir it locks the directory for the life of the process (Close
// unlocks) and loads the allocations saved there; entries that no longer fit the
// ranges are dropped. With an empty stateDir nothing is persisted.
func Open(stateDir string, cidrs []netip.Prefix, nodePorts PortRange) (*Allocator, error) {
	a := &Allocator{owners: map[string]*holding{}}
	for _, c := range cidrs {
		r, err := newIPRange(c)
		if err != nil {
			return nil, err
		}
		for _, o := range a.ranges {
			if o.prefix.Overlaps(r.prefix) {
				return nil, fmt.Errorf("service-cluster-ip-ranges %s and %s overlap", o.prefix, r.prefix)
			}
		}
		a.ranges = append(a.ranges, r)
	}
	pp, err := newPortPool(nodePorts)
	if err != nil {
		return nil, err
	}
	a.ports = pp
	if stateDir == "" {
		return a, nil
	}
	st, err := openStore(stateDir)
	if err != nil {
		return nil, err
	}
	saved, err := st.load()
	if err != nil {
		_ = st.close()
		return nil, err
	}
	a.restore(saved)
	a.store = st
	return a, nil
}

// Close releases the state directory lock. The allocations stay saved.
func (a *Allocator) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.store == nil {
		return nil
	}
	err := a.store.close()
	a.store = nil
	return err
}

// Families returns the IP families that have a range, in range order.
func (a *Allocator) Families() []model.Family {
	var out []model.Family
	for _, r := range a.ranges {
		if !slices.Contains(out, r.family) {
			out = append(out, r.family)
		}
	}
	return out
}

// NodePortRange returns the range node ports come from.
func (a *Allocator) NodePortRange() PortRange { return a.ports.rng }

// Update runs fn with a transaction; every change fn makes is saved once at the end.
// If saving fails, all of fn's changes are undone and Update returns a *SaveError: the
// results fn saw are then void for the owners it lists as changed, and still true for
// the others (their holding was the same before and after fn).
func (a *Allocator) Update(fn func(tx *Txn)) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	tx := &Txn{a: a, before: map[string]*holding{}}
	fn(tx)
	var changed []string
	for owner, before := range tx.before {
		if !before.equal(a.owners[owner]) {
			changed = append(changed, owner)
		}
	}
	if len(changed) == 0 || a.store == nil {
		return nil
	}
	start := time.Now()
	err := a.store.save(a.snapshot())
	if took := time.Since(start); took > 500*time.Millisecond {
		klog.InfoS("Saving the allocations was slow", "took", took)
	}
	if err != nil {
		for owner, before := range tx.before {
			a.set(owner, before)
		}
		slices.Sort(changed)
		return &SaveError{Dir: a.store.dir, Changed: changed, Err: err}
	}
	return nil
}

// Txn is a set of changes applied together by Update. It is only valid inside fn.
type Txn struct {
	a      *Allocator
	before map[string]*holding
}

func (tx *Txn) touch(owner string) {
	if _, ok := tx.before[owner]; !ok {
		tx.before[owner] = tx.a.owners[owner].clone()
	}
}

// Release frees everything owner holds.
func (tx *Txn) Release(owner string) {
	tx.touch(owner)
	tx.a.set(owner, nil)
}

// set replaces owner's holding with h (nil: nothing). The caller checked that nothing
// in h is held by another owner.
func (a *Allocator) set(owner string, h *holding) {
	if old := a.owners[owner]; old != nil {
		for _, ip := range old.ips {
			if r, off := a.rangeOf(ip); r != nil && r.used[off] == owner {
				delete(r.used, off)
			}
		}
		for _, p := range old.ports {
			if a.ports.used[p] == owner {
				delete(a.ports.used, p)
			}
		}
		delete(a.owners, owner)
	}
	if h.empty() {
		return
	}
	h = h.clone()
	for _, ip := range h.ips {
		if r, off := a.rangeOf(ip); r != nil {
			r.used[off] = owner
		}
	}
	for _, p := range h.ports {
		a.ports.used[p] = owner
	}
	a.owners[owner] = h
}

// rangeOf returns the range containing ip and ip's offset in it.
func (a *Allocator) rangeOf(ip netip.Addr) (*ipRange, uint64) {
	for _, r := range a.ranges {
		if off, ok := r.offset(ip); ok {
			return r, off
		}
	}
	return nil, 0
}

// rangeNames lists the ranges of one family for error messages.
func (a *Allocator) rangeNames(f model.Family) string {
	var names []string
	for _, r := range a.ranges {
		if r.family == f {
			names = append(names, r.prefix.String())
		}
	}
	return strings.Join(names, ",")
}

// IPHolder returns the owner of ip, if any.
func (a *Allocator) IPHolder(ip netip.Addr) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, off := a.rangeOf(ip)
	if r == nil {
		return "", false
	}
	o, ok := r.used[off]
	return o, ok
}

// NodePortHolder returns the owner of a nodePort, if any.
func (a *Allocator) NodePortHolder(port int) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	o, ok := a.ports.used[port]
	return o, ok
}

// Owners returns every owner that holds something, sorted.
func (a *Allocator) Owners() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Sorted(maps.Keys(a.owners))
}

// Holding returns what owner holds: its IPs in family order (IPv4 first) and its
// nodePorts by key.
func (a *Allocator) Holding(owner string) (ips []netip.Addr, ports map[string]int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.owners[owner]
	if h == nil {
		return nil, map[string]int{}
	}
	for _, f := range []model.Family{model.IPv4, model.IPv6} {
		if ip, ok := h.ips[f]; ok {
			ips = append(ips, ip)
		}
	}
	return ips, maps.Clone(h.ports)
}

// snapshot returns the state in its saved form.
func (a *Allocator) snapshot() map[string]savedOwner {
	out := make(map[string]savedOwner, len(a.owners))
	for owner, h := range a.owners {
		var so savedOwner
		for _, f := range []model.Family{model.IPv4, model.IPv6} {
			if ip, ok := h.ips[f]; ok {
				so.IPs = append(so.IPs, ip.String())
			}
		}
		if len(h.ports) > 0 {
			so.Ports = maps.Clone(h.ports)
		}
		out[owner] = so
	}
	return out
}

// restore claims the saved allocations, in owner order, dropping whatever no longer
// fits the configured ranges or collides with an earlier owner.
func (a *Allocator) restore(saved map[string]savedOwner) {
	for _, owner := range slices.Sorted(maps.Keys(saved)) {
		h := &holding{ips: map[model.Family]netip.Addr{}, ports: map[string]int{}}
		for _, s := range saved[owner].IPs {
			ip, err := netip.ParseAddr(s)
			if err != nil {
				logDropped(owner, s, "it does not parse")
				continue
			}
			r, off := a.rangeOf(ip)
			switch {
			case r == nil || !r.usable(off):
				logDropped(owner, s, "it is outside the service-cluster-ip-ranges")
			case r.used[off] != "":
				logDropped(owner, s, "it is also held by "+r.used[off])
			case h.ips[r.family].IsValid():
				logDropped(owner, s, "the owner holds another address of its family")
			default:
				h.ips[r.family] = ip.Unmap()
				r.used[off] = owner
			}
		}
		for key, p := range saved[owner].Ports {
			switch holder := a.ports.used[p]; {
			case !a.ports.rng.Contains(p):
				logDropped(owner, fmt.Sprintf("nodePort %d", p), "it is outside the node port range "+a.ports.rng.String())
			case holder != "" && holder != owner:
				logDropped(owner, fmt.Sprintf("nodePort %d", p), "it is also held by "+holder)
			default:
				h.ports[key] = p
				a.ports.used[p] = owner
			}
		}
		if !h.empty() {
			a.owners[owner] = h
		}
	}
}
