package userspace

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/internal/model"
)

// DefaultInterface is the interface that holds the Service addresses in userspace
// mode. kproxy owns it: every address on it is a Service address, and --cleanup
// deletes it whole.
const DefaultInterface = "kproxy0"

// addrManager keeps one family's Service addresses on the kproxy interface. With the
// addresses local, the kernel delivers Service traffic to kproxy's sockets without any
// netfilter rule, and refuses it (RST, ICMP port unreachable) where nothing listens.
type addrManager struct {
	link   string
	family model.Family
}

func (a *addrManager) nlFamily() int {
	if a.family == model.IPv6 {
		return netlink.FAMILY_V6
	}
	return netlink.FAMILY_V4
}

// ensureLink returns the kproxy interface, creating it if needed: a dummy device
// where the kernel has the dummy driver, else a veth pair whose peer is unused (both
// are plain local interfaces; the veth is the fallback for kernels built without dummy).
func (a *addrManager) ensureLink(logger klog.Logger) (netlink.Link, error) {
	link, err := netlink.LinkByName(a.link)
	if err == nil {
		if link.Attrs().Flags&net.FlagUp == 0 {
			if err := netlink.LinkSetUp(link); err != nil {
				return nil, fmt.Errorf("set interface %s up: %w", a.link, err)
			}
		}
		return link, nil
	}
	if !errors.As(err, &netlink.LinkNotFoundError{}) {
		return nil, fmt.Errorf("look up interface %s: %w", a.link, err)
	}
	attrs := netlink.LinkAttrs{Name: a.link}
	if derr := netlink.LinkAdd(&netlink.Dummy{LinkAttrs: attrs}); derr != nil {
		peer := a.link + "-peer"
		if verr := netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: peer}); verr != nil {
			return nil, fmt.Errorf("create interface %s: as dummy: %w; as veth: %w", a.link, derr, verr)
		}
		logger.Info("No dummy driver; holding Service addresses on a veth pair", "interface", a.link, "peer", peer)
		if p, err := netlink.LinkByName(peer); err == nil {
			if err := netlink.LinkSetUp(p); err != nil {
				return nil, fmt.Errorf("set interface %s up: %w", peer, err)
			}
		}
	}
	link, err = netlink.LinkByName(a.link)
	if err != nil {
		return nil, fmt.Errorf("interface %s after creating it: %w", a.link, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("set interface %s up: %w", a.link, err)
	}
	return link, nil
}

// held returns the family's addresses on the kproxy interface.
func (a *addrManager) held(link netlink.Link) (map[netip.Addr]struct{}, error) {
	list, err := netlink.AddrList(link, a.nlFamily())
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", a.link, err)
	}
	out := map[netip.Addr]struct{}{}
	for _, ad := range list {
		if ip, ok := netip.AddrFromSlice(ad.IP); ok && !ip.Unmap().IsLinkLocalUnicast() {
			out[ip.Unmap()] = struct{}{}
		}
	}
	return out, nil
}

// nodeAddrs returns the family's addresses on every other interface: the node's own.
func (a *addrManager) nodeAddrs(link netlink.Link) (map[netip.Addr]struct{}, error) {
	list, err := netlink.AddrList(nil, a.nlFamily())
	if err != nil {
		return nil, fmt.Errorf("list local addresses: %w", err)
	}
	out := map[netip.Addr]struct{}{}
	for _, ad := range list {
		if ad.LinkIndex == link.Attrs().Index {
			continue
		}
		if ip, ok := netip.AddrFromSlice(ad.IP); ok {
			out[ip.Unmap()] = struct{}{}
		}
	}
	return out, nil
}

// add puts every wanted address that is not there yet on the interface.
func (a *addrManager) add(logger klog.Logger, link netlink.Link, want map[netip.Addr]struct{}) error {
	have, err := a.held(link)
	if err != nil {
		return err
	}
	var errs []error
	for ip := range want {
		if _, ok := have[ip]; ok {
			continue
		}
		if err := netlink.AddrAdd(link, hostAddr(ip)); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("add Service address %s to %s: %w", ip, a.link, err))
			continue
		}
		logger.V(2).Info("Added Service address", "address", ip, "interface", a.link)
	}
	return errors.Join(errs...)
}

// removeExcept deletes the family's addresses that are not wanted any more.
func (a *addrManager) removeExcept(logger klog.Logger, link netlink.Link, want map[netip.Addr]struct{}) error {
	have, err := a.held(link)
	if err != nil {
		return err
	}
	var errs []error
	for ip := range have {
		if _, ok := want[ip]; ok {
			continue
		}
		if err := netlink.AddrDel(link, hostAddr(ip)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			errs = append(errs, fmt.Errorf("remove Service address %s from %s: %w", ip, a.link, err))
			continue
		}
		logger.V(2).Info("Removed Service address", "address", ip, "interface", a.link)
	}
	return errors.Join(errs...)
}

// hostAddr is ip as a /32 or /128. IPv6 addresses skip duplicate address detection,
// or they would stay tentative (unbindable) for a second or more.
func hostAddr(ip netip.Addr) *netlink.Addr {
	bits := ip.BitLen()
	ad := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(bits, bits)}}
	if ip.Is6() {
		ad.Flags = unix.IFA_F_NODAD
	}
	return ad
}

// Cleanup deletes the kproxy interface named link (DefaultInterface when empty) and
// with it every Service address userspace mode added. A missing interface is no error.
func Cleanup(link string) error {
	if link == "" {
		link = DefaultInterface
	}
	l, err := netlink.LinkByName(link)
	if err != nil {
		if errors.As(err, &netlink.LinkNotFoundError{}) {
			return nil
		}
		return fmt.Errorf("look up interface %s: %w", link, err)
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("delete interface %s: %w", link, err)
	}
	klog.InfoS("Deleted the userspace-mode interface and its Service addresses", "interface", link)
	return nil
}
