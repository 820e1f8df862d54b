package allocator

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/kproxy/kproxy/internal/model"
)

// IPRequest asks for one address of a family: IP itself when it is valid, else any
// free one (the owner's current address of that family when it has one).
type IPRequest struct {
	Family model.Family
	IP     netip.Addr
}

// PortRequest asks for one nodePort under Key (unique within a request): Port itself
// when it is not 0, else any free one (the port Key held before when there is one).
// Dynamic requests with the same non-empty Share reuse one port, the way the API
// server gives the TCP and UDP ports 53 of one Service the same nodePort.
type PortRequest struct {
	Key   string
	Port  int
	Share string
}

// Request is everything an owner wants to hold; Assign releases whatever else it held.
type Request struct {
	IPs   []IPRequest
	Ports []PortRequest
}

// Assignment is what Assign granted: IPs in request order, nodePorts by key.
type Assignment struct {
	IPs   []netip.Addr
	Ports map[string]int
}

// Assign makes owner hold exactly what req asks for, or, on error, leaves owner's
// holding as it was. The error is a *HeldError, *RangeError or *ExhaustedError naming
// the request entry (ErrorKey) for allocation problems.
func (tx *Txn) Assign(owner string, req Request) (Assignment, error) {
	a := tx.a
	if owner == "" {
		return Assignment{}, fmt.Errorf("allocation without an owner")
	}
	cur := a.owners[owner]
	if cur == nil {
		cur = &holding{}
	}
	next := &holding{ips: map[model.Family]netip.Addr{}, ports: map[string]int{}}

	// Addresses: the given ones first, so a dynamic pick never takes one of them.
	order := make([]model.Family, 0, len(req.IPs))
	for _, r := range req.IPs {
		f := r.Family
		if r.IP.IsValid() {
			f = model.FamilyOf(r.IP)
		}
		if slices.Contains(order, f) {
			return Assignment{}, fmt.Errorf("%s asked for two %s addresses", owner, f)
		}
		order = append(order, f)
		if r.IP.IsValid() {
			ip, err := a.checkIP(owner, r.IP)
			if err != nil {
				return Assignment{}, err
			}
			next.ips[f] = ip
		}
	}
	for i, r := range req.IPs {
		f := order[i]
		if r.IP.IsValid() {
			continue
		}
		if ip, ok := cur.ips[f]; ok {
			next.ips[f] = ip
			continue
		}
		ip, err := a.pickIP(f, next)
		if err != nil {
			return Assignment{}, err
		}
		next.ips[f] = ip
	}

	// Ports: the given ones first, then the dynamic ones.
	explicit := map[int]string{} // port -> share group of the key that asked for it
	for _, r := range req.Ports {
		if _, dup := next.ports[r.Key]; dup || r.Key == "" {
			return Assignment{}, fmt.Errorf("%s: port key %q is empty or repeated", owner, r.Key)
		}
		if r.Port == 0 {
			continue
		}
		if err := a.checkPort(owner, r.Key, r.Port); err != nil {
			return Assignment{}, err
		}
		next.ports[r.Key] = r.Port
		explicit[r.Port] = r.Share
	}
	shared := map[string]int{}
	for _, r := range req.Ports {
		if r.Share != "" && next.ports[r.Key] != 0 {
			shared[r.Share] = next.ports[r.Key]
		}
	}
	for _, r := range req.Ports {
		if r.Port != 0 {
			continue
		}
		p, kept := cur.ports[r.Key]
		// A kept port another key of this request now asks for explicitly is given up,
		// unless they share.
		if g, clash := explicit[p]; kept && clash && (g == "" || g != r.Share) {
			kept = false
		}
		switch {
		case r.Share != "" && shared[r.Share] != 0:
			p = shared[r.Share]
		case kept:
		default:
			taken := slices.Collect(maps.Values(next.ports))
			var ok bool
			p, ok = a.ports.pickFree(func(p int) bool { return slices.Contains(taken, p) })
			if !ok {
				return Assignment{}, &ExhaustedError{Key: r.Key, What: "nodePort", Range: "the node port range " + a.ports.rng.String()}
			}
		}
		next.ports[r.Key] = p
		if r.Share != "" {
			shared[r.Share] = p
		}
	}

	tx.touch(owner)
	a.set(owner, next)
	out := Assignment{Ports: maps.Clone(next.ports)}
	for _, f := range order {
		out.IPs = append(out.IPs, next.ips[f])
	}
	return out, nil
}

// checkIP checks that owner may take ip and returns it normalised.
func (a *Allocator) checkIP(owner string, ip netip.Addr) (netip.Addr, error) {
	ip = ip.Unmap()
	f := model.FamilyOf(ip)
	key := f.String()
	r, off := a.rangeOf(ip)
	if r == nil {
		names := a.rangeNames(f)
		if names == "" {
			return ip, &RangeError{Key: key, Value: ip.String(), Reason: "is " + f.String() + " but there is no " + f.String(), Range: "service-cluster-ip-range"}
		}
		return ip, &RangeError{Key: key, Value: ip.String(), Reason: "is outside", Range: "the service-cluster-ip-range " + names}
	}
	if !r.usable(off) {
		return ip, &RangeError{Key: key, Value: ip.String(), Reason: "is the network or broadcast address of", Range: "the service-cluster-ip-range " + r.prefix.String()}
	}
	if h, ok := r.used[off]; ok && h != owner {
		return ip, &HeldError{Key: key, Value: ip.String(), Holder: h}
	}
	return ip, nil
}

// pickIP picks a free address of family f that next does not hold already.
func (a *Allocator) pickIP(f model.Family, next *holding) (netip.Addr, error) {
	found := false
	for _, r := range a.ranges {
		if r.family != f {
			continue
		}
		found = true
		off, ok := r.pickFree(func(off uint64) bool {
			for _, ip := range next.ips {
				if o, in := r.offset(ip); in && o == off {
					return true
				}
			}
			return false
		})
		if ok {
			return r.addrAt(off), nil
		}
	}
	if !found {
		return netip.Addr{}, &RangeError{Key: f.String(), Value: "an " + f.String() + " address", Reason: "was requested but there is no " + f.String(), Range: "service-cluster-ip-range"}
	}
	return netip.Addr{}, &ExhaustedError{Key: f.String(), What: f.String() + " address", Range: "the service-cluster-ip-range " + a.rangeNames(f)}
}

func (a *Allocator) checkPort(owner, key string, p int) error {
	v := fmt.Sprintf("nodePort %d", p)
	if !a.ports.rng.Contains(p) {
		return &RangeError{Key: key, Value: v, Reason: "is outside", Range: "the node port range " + a.ports.rng.String()}
	}
	if h, ok := a.ports.used[p]; ok && h != owner {
		return &HeldError{Key: key, Value: v, Holder: h}
	}
	return nil
}

// current returns owner's holding as a Request that asks for exactly that.
func (a *Allocator) current(owner string) Request {
	var req Request
	h := a.owners[owner]
	if h == nil {
		return req
	}
	for _, f := range []model.Family{model.IPv4, model.IPv6} {
		if ip, ok := h.ips[f]; ok {
			req.IPs = append(req.IPs, IPRequest{Family: f, IP: ip})
		}
	}
	for _, k := range slices.Sorted(maps.Keys(h.ports)) {
		req.Ports = append(req.Ports, PortRequest{Key: k, Port: h.ports[k]})
	}
	return req
}

// Assign is Txn.Assign in a transaction of its own.
func (a *Allocator) Assign(owner string, req Request) (out Assignment, err error) {
	if uerr := a.Update(func(tx *Txn) { out, err = tx.Assign(owner, req) }); uerr != nil {
		return Assignment{}, uerr
	}
	return out, err
}

// AllocateIP gives owner an address of family f, keeping what else it holds; an owner
// that has an address of that family already gets that one.
func (a *Allocator) AllocateIP(owner string, f model.Family) (ip netip.Addr, err error) {
	uerr := a.Update(func(tx *Txn) {
		req := a.current(owner)
		if !slices.ContainsFunc(req.IPs, func(r IPRequest) bool { return r.Family == f }) {
			req.IPs = append(req.IPs, IPRequest{Family: f})
		}
		var out Assignment
		if out, err = tx.Assign(owner, req); err == nil {
			ip = out.IPs[slices.IndexFunc(req.IPs, func(r IPRequest) bool { return r.Family == f })]
		}
	})
	if uerr != nil {
		return netip.Addr{}, uerr
	}
	return ip, err
}

// AllocateSpecificIP gives owner the address ip, replacing the address of that family
// it held before.
func (a *Allocator) AllocateSpecificIP(owner string, ip netip.Addr) (err error) {
	uerr := a.Update(func(tx *Txn) {
		req := a.current(owner)
		req.IPs = slices.DeleteFunc(req.IPs, func(r IPRequest) bool { return r.Family == model.FamilyOf(ip) })
		req.IPs = append(req.IPs, IPRequest{IP: ip})
		_, err = tx.Assign(owner, req)
	})
	if uerr != nil {
		return uerr
	}
	return err
}

// AllocateNodePort gives owner a nodePort under key (the one it has if it has one).
func (a *Allocator) AllocateNodePort(owner, key string) (port int, err error) {
	return a.allocatePort(owner, key, 0)
}

// AllocateSpecificNodePort gives owner the nodePort port under key.
func (a *Allocator) AllocateSpecificNodePort(owner, key string, port int) error {
	_, err := a.allocatePort(owner, key, port)
	return err
}

func (a *Allocator) allocatePort(owner, key string, port int) (got int, err error) {
	uerr := a.Update(func(tx *Txn) {
		req := a.current(owner)
		req.Ports = slices.DeleteFunc(req.Ports, func(r PortRequest) bool { return r.Key == key && port != 0 })
		if !slices.ContainsFunc(req.Ports, func(r PortRequest) bool { return r.Key == key }) {
			req.Ports = append(req.Ports, PortRequest{Key: key, Port: port})
		}
		var out Assignment
		if out, err = tx.Assign(owner, req); err == nil {
			got = out.Ports[key]
		}
	})
	if uerr != nil {
		return 0, uerr
	}
	return got, err
}

// Release frees everything owner holds.
func (a *Allocator) Release(owner string) error {
	return a.Update(func(tx *Txn) { tx.Release(owner) })
}
