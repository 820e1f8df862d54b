package allocator

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"

	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/model"
)

// PortRange is the node port range type the configuration uses.
type PortRange = config.PortRange

// DefaultNodePortRange is the API server's default --service-node-port-range.
var DefaultNodePortRange = PortRange{Base: 30000, Size: 2768}

// ipRange tracks the allocated addresses of one service CIDR. Addresses are kept as
// offsets from the network address; ranges of up to 64 host bits fit in a uint64, and
// a map of the used offsets (rather than a bitmap) keeps a /12 or a /64 cheap.
type ipRange struct {
	prefix      netip.Prefix
	family      model.Family
	first, last uint64 // usable offsets, inclusive
	used        map[uint64]string
	// cursor is where the next dynamic allocation starts scanning. It begins at a
	// random offset and moves past each allocation, so a scan is O(1) amortised and
	// freshly released addresses are not handed out again at once.
	cursor uint64
}

func newIPRange(p netip.Prefix) (*ipRange, error) {
	if !p.IsValid() {
		return nil, fmt.Errorf("invalid service-cluster-ip-range %v", p)
	}
	p = p.Masked()
	hostBits := p.Addr().BitLen() - p.Bits()
	if hostBits > 64 {
		return nil, fmt.Errorf("service-cluster-ip-range %s is too large: at most 64 host bits are supported", p)
	}
	r := &ipRange{prefix: p, family: model.FamilyOf(p.Addr()), used: map[uint64]string{}}
	// Like the API server: never hand out the network address, nor the IPv4 broadcast
	// address.
	r.first = 1
	r.last = ^uint64(0)
	if hostBits < 64 {
		r.last = uint64(1)<<hostBits - 1
	}
	if r.family == model.IPv4 {
		r.last--
	}
	if hostBits == 0 || r.last < r.first {
		return nil, fmt.Errorf("service-cluster-ip-range %s is too small: it has no usable address", p)
	}
	r.cursor = r.first + rand.Uint64N(r.size())
	return r, nil
}

// size is the number of usable addresses; first >= 1 keeps it from overflowing.
func (r *ipRange) size() uint64 { return r.last - r.first + 1 }

// offset returns ip's offset in the range and whether it is inside the prefix at all.
func (r *ipRange) offset(ip netip.Addr) (uint64, bool) {
	ip = ip.Unmap()
	if !r.prefix.Contains(ip) {
		return 0, false
	}
	ipb, base := ip.As16(), r.prefix.Addr().As16()
	return binary.BigEndian.Uint64(ipb[8:]) - binary.BigEndian.Uint64(base[8:]), true
}

func (r *ipRange) addrAt(off uint64) netip.Addr {
	b := r.prefix.Addr().As16()
	binary.BigEndian.PutUint64(b[8:], binary.BigEndian.Uint64(b[8:])+off)
	a := netip.AddrFrom16(b)
	if r.family == model.IPv4 {
		return a.Unmap()
	}
	return a
}

func (r *ipRange) usable(off uint64) bool { return off >= r.first && off <= r.last }

// pickFree returns a free offset, skipping those skip reports, scanning from the
// cursor. It does not claim the offset.
func (r *ipRange) pickFree(skip func(uint64) bool) (uint64, bool) {
	if uint64(len(r.used)) >= r.size() {
		return 0, false
	}
	off := r.cursor
	for n := uint64(0); n < r.size(); n++ {
		if _, taken := r.used[off]; !taken && !skip(off) {
			r.cursor = off + 1
			if r.cursor > r.last || r.cursor < r.first {
				r.cursor = r.first
			}
			return off, true
		}
		off++
		if off > r.last || off < r.first {
			off = r.first
		}
	}
	return 0, false
}

// portPool tracks the allocated ports of a PortRange; the same scheme as ipRange.
type portPool struct {
	rng    PortRange
	used   map[int]string
	cursor int
}

func newPortPool(r PortRange) (*portPool, error) {
	if r.Size <= 0 || r.Base <= 0 || r.Base+r.Size-1 > 65535 {
		return nil, fmt.Errorf("invalid node port range %d+%d: it must lie within 1-65535", r.Base, r.Size)
	}
	return &portPool{rng: r, used: map[int]string{}, cursor: r.Base + rand.IntN(r.Size)}, nil
}

func (p *portPool) pickFree(skip func(int) bool) (int, bool) {
	if len(p.used) >= p.rng.Size {
		return 0, false
	}
	port := p.cursor
	for n := 0; n < p.rng.Size; n++ {
		if _, taken := p.used[port]; !taken && !skip(port) {
			p.cursor = port + 1
			if !p.rng.Contains(p.cursor) {
				p.cursor = p.rng.Base
			}
			return port, true
		}
		port++
		if !p.rng.Contains(port) {
			port = p.rng.Base
		}
	}
	return 0, false
}
