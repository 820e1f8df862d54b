package trace

import (
	"fmt"
	"net/netip"
	"strings"
)

// Origin is where a traced packet enters the node's netfilter hooks.
type Origin string

const (
	// FromPod is a packet from a pod on this node: it arrives through PREROUTING.
	FromPod Origin = "pod"
	// FromNode is a packet the node itself sends: it starts in OUTPUT.
	FromNode Origin = "node"
	// FromExternal is a packet from outside the node: it arrives through PREROUTING.
	FromExternal Origin = "external"
)

// Packet is the first packet of a connection to trace.
type Packet struct {
	Protocol    string // "tcp", "udp" or "sctp"
	Source      netip.Addr
	Destination netip.Addr
	Port        uint16 // destination port
	// SourcePort is 0 when unknown: rules matching the source port then do not match.
	SourcePort uint16
	From       Origin
	// InInterface is the interface the packet arrives on; "" means unknown, and rules
	// matching -i / iifname then do not match (the result notes it).
	InInterface string
}

// Validate checks that the packet can be traced and normalizes its protocol.
func (p *Packet) Validate() error {
	p.Protocol = strings.ToLower(p.Protocol)
	switch p.Protocol {
	case "tcp", "udp", "sctp":
	default:
		return fmt.Errorf("packet: protocol %q is not one of tcp, udp, sctp", p.Protocol)
	}
	if !p.Source.IsValid() || !p.Destination.IsValid() {
		return fmt.Errorf("packet: source and destination addresses are required")
	}
	p.Source, p.Destination = p.Source.Unmap(), p.Destination.Unmap()
	if p.Source.Is4() != p.Destination.Is4() {
		return fmt.Errorf("packet: source %s and destination %s are of different IP families", p.Source, p.Destination)
	}
	if p.Port == 0 {
		return fmt.Errorf("packet: destination port is required")
	}
	switch p.From {
	case FromPod, FromNode, FromExternal:
	default:
		return fmt.Errorf("packet: origin %q is not one of pod, node, external", p.From)
	}
	return nil
}

// IPv6 reports whether the packet is an IPv6 packet.
func (p *Packet) IPv6() bool { return !p.Destination.Is4() }

// Env describes the node the packet is traced on.
type Env struct {
	// LocalAddresses are the node's own addresses: what "-m addrtype --dst-type LOCAL"
	// and "fib daddr type local" match, and what decides between the INPUT and FORWARD
	// paths. Loopback addresses (127.0.0.0/8, ::1) are always local.
	LocalAddresses []netip.Addr
	// IPSets holds the members of ipsets by set name, as "ipset list" prints them
	// ("10.96.0.10,tcp:80"), for the "-m set" matches of IPVS mode's rules; when nil,
	// such matches are not understood (they do not match, and the result says so).
	IPSets map[string][]string
}

func (e *Env) isLocal(a netip.Addr) bool {
	a = a.Unmap()
	if a.IsLoopback() {
		return true
	}
	for _, l := range e.LocalAddresses {
		if l.Unmap() == a {
			return true
		}
	}
	return false
}

// flow is the packet as it moves through the hooks: DNAT rewrites its destination,
// marks change, and conntrack notes what has been done to it.
type flow struct {
	proto    string
	src, dst netip.Addr
	sport    uint16
	dport    uint16
	iif      string
	mark     uint32
	dnat     bool // a DNAT (conntrack status DNAT) has happened
	masq     bool // a MASQUERADE/SNAT has happened
}

func newFlow(p Packet) flow {
	return flow{proto: p.Protocol, src: p.Source, dst: p.Destination, sport: p.SourcePort, dport: p.Port, iif: p.InInterface}
}
