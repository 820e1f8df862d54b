package ipvs

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"

	libipvs "github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/kproxy/kproxy/internal/model"
)

// Handle is the part of an IPVS netlink handle the backend uses; *libipvs.Handle is
// one, and tests use a fake.
type Handle interface {
	GetServices() ([]*libipvs.Service, error)
	GetDestinations(*libipvs.Service) ([]*libipvs.Destination, error)
	NewService(*libipvs.Service) error
	UpdateService(*libipvs.Service) error
	DelService(*libipvs.Service) error
	NewDestination(*libipvs.Service, *libipvs.Destination) error
	UpdateDestination(*libipvs.Service, *libipvs.Destination) error
	DelDestination(*libipvs.Service, *libipvs.Destination) error
	SetConfig(*libipvs.Config) error
}

// Available reports whether this kernel has IPVS loaded (or built in). It does not
// load the module: other modes only look for leftovers with it.
func Available() bool {
	_, err := os.Stat("/proc/net/ip_vs")
	return err == nil
}

// NewHandle opens an IPVS netlink handle in this network namespace. moby/ipvs tries
// "modprobe ip_vs" first, as kube-proxy does.
func NewHandle() (Handle, error) {
	h, err := libipvs.New("")
	if err != nil {
		return nil, fmt.Errorf("ipvs: opening the netlink handle: %w", err)
	}
	if _, err := h.GetServices(); err != nil {
		h.Close()
		return nil, fmt.Errorf("ipvs: the kernel does not answer IPVS requests (is CONFIG_IP_VS enabled and the ip_vs module loaded?): %w", err)
	}
	return h, nil
}

// Links manages kube-ipvs0 and lists the node's addresses.
type Links interface {
	// EnsureDummy creates the dummy interface if it is missing.
	EnsureDummy(name string) error
	Exists(name string) bool
	// DeleteLink removes the interface; false if there was none.
	DeleteLink(name string) (bool, error)
	// Addrs lists the family's addresses on the interface (none if it is missing).
	Addrs(name string, f model.Family) ([]netip.Addr, error)
	AddAddr(name string, a netip.Addr) error
	DelAddr(name string, a netip.Addr) error
	// LocalAddrs lists the family's addresses on every interface but exclude.
	LocalAddrs(f model.Family, exclude string) ([]netip.Addr, error)
}

// NetlinkLinks is Links over netlink.
type NetlinkLinks struct{}

// EnsureDummy creates the dummy interface if it is missing.
func (NetlinkLinks) EnsureDummy(name string) error {
	if _, err := netlink.LinkByName(name); err == nil {
		return nil
	}
	la := netlink.NewLinkAttrs()
	la.Name = name
	if err := netlink.LinkAdd(&netlink.Dummy{LinkAttrs: la}); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("creating dummy interface %s (is the dummy module available?): %w", name, err)
	}
	return nil
}

// Exists reports whether the interface exists.
func (NetlinkLinks) Exists(name string) bool {
	_, err := netlink.LinkByName(name)
	return err == nil
}

// DeleteLink removes the interface; false if there was none.
func (NetlinkLinks) DeleteLink(name string) (bool, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return false, nil
	}
	if err := netlink.LinkDel(l); err != nil {
		return true, fmt.Errorf("deleting interface %s: %w", name, err)
	}
	return true, nil
}

func nlFamily(f model.Family) int {
	if f == model.IPv6 {
		return netlink.FAMILY_V6
	}
	return netlink.FAMILY_V4
}

// Addrs lists the family's addresses on the interface (none if it is missing).
func (NetlinkLinks) Addrs(name string, f model.Family) ([]netip.Addr, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil, nil
	}
	addrs, err := netlink.AddrList(l, nlFamily(f))
	if err != nil {
		return nil, fmt.Errorf("listing addresses of %s: %w", name, err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	return out, nil
}

func hostNet(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}
}

// AddAddr puts a host address (/32 or /128) on the interface.
func (NetlinkLinks) AddAddr(name string, a netip.Addr) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("binding %s: interface %s: %w", a, name, err)
	}
	if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: hostNet(a)}); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("binding %s to %s: %w", a, name, err)
	}
	return nil
}

// DelAddr removes the host address from the interface.
func (NetlinkLinks) DelAddr(name string, a netip.Addr) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil
	}
	if err := netlink.AddrDel(l, &netlink.Addr{IPNet: hostNet(a)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("unbinding %s from %s: %w", a, name, err)
	}
	return nil
}

// LocalAddrs lists the family's addresses on every interface but exclude.
func (NetlinkLinks) LocalAddrs(f model.Family, exclude string) ([]netip.Addr, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing interfaces: %w", err)
	}
	var out []netip.Addr
	for _, l := range links {
		if l.Attrs().Name == exclude {
			continue
		}
		addrs, err := netlink.AddrList(l, nlFamily(f))
		if err != nil {
			return nil, fmt.Errorf("listing addresses of %s: %w", l.Attrs().Name, err)
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, nil
}

// IPTables runs one family's iptables binaries; iptables.NewRunner returns one.
type IPTables interface {
	// Restore feeds iptables-restore --noflush.
	Restore(data []byte) error
	// Save returns iptables-save's output for one table.
	Save(table string) ([]byte, error)
	// Run runs iptables with the arguments.
	Run(args ...string) error
}

// IPSet runs the ipset binary.
type IPSet interface {
	// Restore feeds "ipset restore -exist".
	Restore(data []byte) error
	// Names lists the sets in the kernel.
	Names() ([]string, error)
	Destroy(name string) error
}

// ExecIPSet is IPSet over the ipset binary.
type ExecIPSet struct{}

// Restore feeds data to "ipset restore -exist".
func (ExecIPSet) Restore(data []byte) error {
	cmd := exec.Command("ipset", "restore", "-exist")
	cmd.Stdin = bytes.NewReader(data)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ipset restore: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Names lists the sets in the kernel; none when the ipset binary is missing.
func (ExecIPSet) Names() ([]string, error) {
	if _, err := exec.LookPath("ipset"); err != nil {
		return nil, nil
	}
	out, err := exec.Command("ipset", "list", "-n").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ipset list -n: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return strings.Fields(string(out)), nil
}

// Destroy deletes the set.
func (ExecIPSet) Destroy(name string) error {
	if out, err := exec.Command("ipset", "destroy", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ipset destroy %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}
