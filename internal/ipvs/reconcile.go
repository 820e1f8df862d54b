package ipvs

import (
	"errors"
	"fmt"
	"net/netip"

	libipvs "github.com/moby/ipvs"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/internal/model"
)

// Service flags as the kernel reports them (include/uapi/linux/ip_vs.h).
const (
	flagPersistent = 0x1
	flagHashed     = 0x2 // set by the kernel on every listed service
)

func afOf(f model.Family) uint16 {
	if f == model.IPv6 {
		return unix.AF_INET6
	}
	return unix.AF_INET
}

func protoNumber(p v1.Protocol) uint16 {
	switch p {
	case v1.ProtocolUDP:
		return unix.IPPROTO_UDP
	case v1.ProtocolSCTP:
		return unix.IPPROTO_SCTP
	}
	return unix.IPPROTO_TCP
}

func protoName(n uint16) v1.Protocol {
	switch n {
	case unix.IPPROTO_UDP:
		return v1.ProtocolUDP
	case unix.IPPROTO_SCTP:
		return v1.ProtocolSCTP
	}
	return v1.ProtocolTCP
}

// toService is the netlink form of a desired virtual server.
func toService(vs *VirtualServer) *libipvs.Service {
	f := model.FamilyOf(vs.Key.Addr)
	s := &libipvs.Service{
		Address:       vs.Key.Addr.AsSlice(),
		Protocol:      protoNumber(vs.Key.Protocol),
		Port:          vs.Key.Port,
		SchedName:     vs.Scheduler,
		AddressFamily: afOf(f),
		Netmask:       0xffffffff,
	}
	if f == model.IPv6 {
		s.Netmask = 128
	}
	if vs.PersistenceSeconds > 0 {
		s.Flags |= flagPersistent
		s.Timeout = vs.PersistenceSeconds
	}
	return s
}

func keyOf(s *libipvs.Service) (VSKey, bool) {
	a, ok := netip.AddrFromSlice(s.Address)
	if !ok {
		return VSKey{}, false
	}
	return VSKey{Addr: a.Unmap(), Protocol: protoName(s.Protocol), Port: s.Port}, true
}

func destAddr(d *libipvs.Destination) netip.AddrPort {
	a, _ := netip.AddrFromSlice(d.Address)
	return netip.AddrPortFrom(a.Unmap(), d.Port)
}

func toDestination(ap netip.AddrPort, weight int) *libipvs.Destination {
	return &libipvs.Destination{
		Address:         ap.Addr().AsSlice(),
		Port:            ap.Port(),
		Weight:          weight,
		ConnectionFlags: libipvs.ConnFwdMasq,
		AddressFamily:   afOf(model.FamilyOf(ap.Addr())),
	}
}

// sameService reports whether the kernel's virtual server already has the settings.
func sameService(cur, want *libipvs.Service) bool {
	return cur.SchedName == want.SchedName && cur.Flags&^flagHashed == want.Flags && (want.Flags&flagPersistent == 0 || cur.Timeout == want.Timeout)
}

// kernelServices lists the family's address-based virtual servers in the kernel.
func kernelServices(h Handle, f model.Family) (map[VSKey]*libipvs.Service, error) {
	list, err := h.GetServices()
	if err != nil {
		return nil, fmt.Errorf("listing IPVS virtual servers: %w", err)
	}
	out := map[VSKey]*libipvs.Service{}
	for _, s := range list {
		if s.FWMark != 0 || s.AddressFamily != afOf(f) {
			continue
		}
		if k, ok := keyOf(s); ok {
			out[k] = s
		}
	}
	return out, nil
}

// reconcile makes the kernel's virtual servers of the family match the plan. Virtual
// servers the plan does not hold are deleted unless their address is excluded; real
// servers it no longer holds are removed gracefully.
func reconcile(logger klog.Logger, h Handle, f model.Family, servers map[VSKey]*VirtualServer, exclude []netip.Prefix, g *graceful) error {
	current, err := kernelServices(h, f)
	if err != nil {
		return err
	}
	var errs []error
	for key, vs := range servers {
		want := toService(vs)
		cur, ok := current[key]
		switch {
		case !ok:
			if err := h.NewService(want); err != nil {
				errs = append(errs, fmt.Errorf("service %s: creating virtual server %s (scheduler %q): %w", vs.Service, key, vs.Scheduler, err))
				continue
			}
			logger.V(3).Info("Created IPVS virtual server", "service", vs.Service, "vs", key)
		case !sameService(cur, want):
			if err := h.UpdateService(want); err != nil {
				errs = append(errs, fmt.Errorf("service %s: updating virtual server %s: %w", vs.Service, key, err))
				continue
			}
		}
		if err := syncDestinations(logger, h, want, vs, g); err != nil {
			errs = append(errs, err)
		}
	}
	for key, cur := range current {
		if _, ok := servers[key]; ok || excluded(key.Addr, exclude) {
			continue
		}
		if err := h.DelService(cur); err != nil {
			errs = append(errs, fmt.Errorf("deleting virtual server %s: %w", key, err))
			continue
		}
		g.forgetService(key)
		logger.V(3).Info("Deleted IPVS virtual server", "vs", key)
	}
	return errors.Join(errs...)
}

func excluded(a netip.Addr, exclude []netip.Prefix) bool {
	for _, p := range exclude {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// syncDestinations sets a virtual server's real servers: wanted ones present with
// weight 1, others drained (weight 0) or deleted.
func syncDestinations(logger klog.Logger, h Handle, svc *libipvs.Service, vs *VirtualServer, g *graceful) error {
	cur, err := h.GetDestinations(svc)
	if err != nil {
		return fmt.Errorf("service %s: listing real servers of %s: %w", vs.Service, vs.Key, err)
	}
	want := map[netip.AddrPort]bool{}
	for _, d := range vs.Destinations {
		want[d] = true
	}
	var errs []error
	have := map[netip.AddrPort]bool{}
	for _, d := range cur {
		ap := destAddr(d)
		have[ap] = true
		if want[ap] {
			g.forget(vs.Key, ap)
			if d.Weight != 1 {
				if err := h.UpdateDestination(svc, toDestination(ap, 1)); err != nil {
					errs = append(errs, fmt.Errorf("service %s: restoring real server %s of %s: %w", vs.Service, ap, vs.Key, err))
				}
			}
			continue
		}
		if err := g.remove(logger, h, svc, vs.Key, d); err != nil {
			errs = append(errs, fmt.Errorf("service %s: removing real server %s of %s: %w", vs.Service, ap, vs.Key, err))
		}
	}
	for _, ap := range vs.Destinations {
		if have[ap] {
			continue
		}
		if err := h.NewDestination(svc, toDestination(ap, 1)); err != nil {
			errs = append(errs, fmt.Errorf("service %s: adding real server %s to %s: %w", vs.Service, ap, vs.Key, err))
		}
	}
	return errors.Join(errs...)
}
