package nftables

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	gnft "github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nltest"
	"golang.org/x/sys/unix"

	"github.com/kproxy/kproxy/internal/model"
)

// Element-only transactions (an endpoint change, a Service gaining or losing its last
// endpoint) are the common case of a partial sync. nft (1.0.x) reads every chain and
// every set's elements of the table before it runs any transaction, which costs more
// than 100 ms at ten thousand Services; written straight over netlink, the same
// element updates cost well under a millisecond. This file encodes kproxy's elements
// the way nft does, so that nft reads them back as its own.

// elementOp is one element added to or deleted from a set or map.
type elementOp struct {
	del bool
	el  element
}

// field is one part of a set key or map value, as the kernel stores it.
type field int

const (
	fieldAddr   field = iota // ipv4_addr or ipv6_addr
	fieldProto               // inet_proto: 1 byte
	fieldPort                // inet_service: 2 bytes, big-endian
	fieldNumgen              // an interval of numgen values: 4 bytes, big-endian
)

// layout is how one set or map stores its elements.
type layout struct {
	key     []field
	value   []field // the data of a non-verdict map
	verdict bool    // a verdict map
}

// layoutOf returns the layout of one of kproxy's sets or maps, or false for a
// container it does not know: writing to one fails the sync, and the next one rebuilds
// the table through nft.
func layoutOf(container string, isMap bool) (layout, bool) {
	addrProtoPort := []field{fieldAddr, fieldProto, fieldPort}
	switch container {
	case setClusterIPs, setNodePortIPs:
		return layout{key: []field{fieldAddr}}, !isMap
	case setHairpinConnections:
		return layout{key: []field{fieldAddr, fieldAddr, fieldProto, fieldPort}}, !isMap
	case mapServiceIPs, mapNoEndpointServices, mapFirewallIPs:
		return layout{key: addrProtoPort, verdict: true}, isMap
	case mapServiceNodePorts, mapNoEndpointNodePorts:
		return layout{key: []field{fieldProto, fieldPort}, verdict: true}, isMap
	}
	if isMap && (strings.HasPrefix(container, prefixService) || strings.HasPrefix(container, prefixLocal)) {
		// A dispatch chain's endpoint map (see endpointDispatch).
		return layout{key: []field{fieldNumgen}, value: []field{fieldAddr, fieldPort}}, true
	}
	return layout{}, false
}

// encodeOps turns element operations into netlink set elements, one group per
// container and direction: every delete goes before every add (a changed element is
// a delete and an add of the same key, which is how build emits them), and within that
// the kernel does not care about order, while a message per element would cost an ack
// each. It fails on anything it cannot encode exactly.
func encodeOps(f model.Family, ops []elementOp) ([]setElements, error) {
	var out []setElements
	index := map[setElementsKey]int{}
	for _, pass := range []bool{true, false} {
		for _, op := range ops {
			if op.del != pass {
				continue
			}
			l, ok := layoutOf(op.el.container, op.el.isMap)
			if !ok {
				return nil, fmt.Errorf("element of %s: unknown set or map", op.el.container)
			}
			els, err := encodeElement(f, l, &op.el, op.del)
			if err != nil {
				return nil, fmt.Errorf("element %s of %s: %w", strings.Join(op.el.key, " . "), op.el.container, err)
			}
			k := setElementsKey{op.el.container, op.del}
			i, seen := index[k]
			if !seen {
				i = len(out)
				index[k] = i
				out = append(out, setElements{container: op.el.container, del: op.del})
			}
			out[i].elements = append(out[i].elements, els...)
		}
	}
	return out, nil
}

type setElementsKey struct {
	container string
	del       bool
}

// setElements is one netlink message's worth: elements added to, or deleted from, one
// container.
type setElements struct {
	container string
	del       bool
	elements  []gnft.SetElement
}

// encodeElement encodes one element; an interval becomes its start and its end (the
// value after it, flagged), as nft writes intervals.
func encodeElement(f model.Family, l layout, el *element, del bool) ([]gnft.SetElement, error) {
	if len(el.key) != len(l.key) {
		return nil, fmt.Errorf("key has %d parts, want %d", len(el.key), len(l.key))
	}
	if len(l.key) == 1 && l.key[0] == fieldNumgen {
		lo, hi, err := parseInterval(el.key[0])
		if err != nil {
			return nil, err
		}
		start := gnft.SetElement{Key: binary.BigEndian.AppendUint32(nil, lo)}
		if !del {
			val, err := encodeParts(f, l.value, strings.Split(el.value, " . "))
			if err != nil {
				return nil, fmt.Errorf("value %q: %w", el.value, err)
			}
			start.Val = val
		}
		end := gnft.SetElement{Key: binary.BigEndian.AppendUint32(nil, hi+1), IntervalEnd: true}
		return []gnft.SetElement{start, end}, nil
	}
	key, err := encodeParts(f, l.key, el.key)
	if err != nil {
		return nil, err
	}
	se := gnft.SetElement{Key: key}
	if del {
		return []gnft.SetElement{se}, nil
	}
	se.Comment = truncComment(el.comment)
	if l.verdict {
		v, err := parseVerdict(el.value)
		if err != nil {
			return nil, err
		}
		se.VerdictData = v
	}
	return []gnft.SetElement{se}, nil
}

// encodeParts encodes a key or value; in a concatenation each part fills whole 32-bit
// registers, as the kernel loads them.
func encodeParts(f model.Family, fields []field, parts []string) ([]byte, error) {
	if len(parts) != len(fields) {
		return nil, fmt.Errorf("%d parts, want %d", len(parts), len(fields))
	}
	var out []byte
	for i, fl := range fields {
		var b []byte
		switch fl {
		case fieldAddr:
			a, err := netip.ParseAddr(parts[i])
			if err != nil || model.FamilyOf(a) != f {
				return nil, fmt.Errorf("%q is not an %s address", parts[i], f)
			}
			b = a.Unmap().AsSlice()
		case fieldProto:
			p, ok := protoNumbers[parts[i]]
			if !ok {
				return nil, fmt.Errorf("unknown protocol %q", parts[i])
			}
			b = []byte{p}
		case fieldPort:
			n, err := strconv.ParseUint(parts[i], 10, 16)
			if err != nil {
				return nil, fmt.Errorf("port %q: %w", parts[i], err)
			}
			b = binary.BigEndian.AppendUint16(nil, uint16(n))
		default:
			return nil, fmt.Errorf("field %d cannot be encoded here", fl)
		}
		out = append(out, b...)
		if len(fields) > 1 {
			for len(out)%4 != 0 {
				out = append(out, 0)
			}
		}
	}
	return out, nil
}

var protoNumbers = map[string]byte{"tcp": unix.IPPROTO_TCP, "udp": unix.IPPROTO_UDP, "sctp": unix.IPPROTO_SCTP}

// parseInterval reads "lo-hi" or "n".
func parseInterval(s string) (lo, hi uint32, err error) {
	a, z, isRange := strings.Cut(s, "-")
	l, err1 := strconv.ParseUint(a, 10, 32)
	h := l
	var err2 error
	if isRange {
		h, err2 = strconv.ParseUint(z, 10, 32)
	}
	if err1 != nil || err2 != nil || h < l || h == 1<<32-1 {
		return 0, 0, fmt.Errorf("bad numgen interval %q", s)
	}
	return uint32(l), uint32(h), nil
}

// parseVerdict reads "goto CHAIN", "jump CHAIN", "drop", "accept".
func parseVerdict(s string) (*expr.Verdict, error) {
	kind, chain, _ := strings.Cut(s, " ")
	switch kind {
	case "goto":
		return &expr.Verdict{Kind: expr.VerdictGoto, Chain: chain}, nil
	case "jump":
		return &expr.Verdict{Kind: expr.VerdictJump, Chain: chain}, nil
	case "drop":
		return &expr.Verdict{Kind: expr.VerdictDrop}, nil
	case "accept":
		return &expr.Verdict{Kind: expr.VerdictAccept}, nil
	}
	return nil, fmt.Errorf("verdict %q is not understood", s)
}

const (
	// messageBytes bounds the elements of one netlink message: they sit in one
	// attribute, whose length field has 16 bits. A longer list wraps that length
	// around, and the kernel reads garbage (ENOENT, at 1024 verdict elements).
	messageBytes = 48 << 10
	// bytesPerElement is more than the largest element kproxy encodes takes in a
	// message (an IPv6 hairpin key, or a verdict with a long chain name and comment),
	// to size the socket buffer.
	bytesPerElement = 640
)

// messages splits a container's elements into netlink messages of at most
// messageBytes of elements each.
func messages(els []gnft.SetElement) [][]gnft.SetElement {
	var out [][]gnft.SetElement
	start, size := 0, 0
	for i := range els {
		n := elementBytes(&els[i])
		if i > start && size+n > messageBytes {
			out = append(out, els[start:i])
			start, size = i, 0
		}
		size += n
	}
	if start < len(els) {
		out = append(out, els[start:])
	}
	return out
}

// elementBytes is more than one element takes in a message: its data plus the
// attribute headers and padding around each part.
func elementBytes(e *gnft.SetElement) int {
	n := 64 + len(e.Key) + len(e.KeyEnd) + len(e.Val) + len(e.Comment)
	if e.VerdictData != nil {
		n += len(e.VerdictData.Chain)
	}
	return n
}

// forceBuffers sets the socket's send and receive buffers to n bytes, above
// net.core.wmem_max (SO_SNDBUFFORCE, which needs CAP_NET_ADMIN, as programming
// nftables does). The receive buffer must hold an error's ack, which echoes the
// failed message.
func forceBuffers(c *netlink.Conn, n int) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, n)
		if serr == nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n)
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("netlink socket buffers of %d bytes: %w", n, serr)
	}
	return nil
}

// writeElementsNetlink applies element operations to the family's table in one
// netlink batch, which the kernel commits as one transaction.
func writeElementsNetlink(f model.Family, ops []elementOp) error {
	return writeElementsNetlinkWith(f, ops, nil)
}

// writeElementsNetlinkWith is writeElementsNetlink over the kernel's socket, or over
// a test socket when dial is not nil (bench/memory's sink kernel).
func writeElementsNetlinkWith(f model.Family, ops []elementOp, dial nltest.Func) error {
	groups, err := encodeOps(f, ops)
	if err != nil {
		return err
	}
	// The batch goes to the kernel in one sendmsg, which fails (EMSGSIZE) when it is
	// larger than the socket's send buffer; size that as nft does, with room to spare.
	bytes := 256 << 10
	for _, g := range groups {
		bytes += len(g.elements) * bytesPerElement
	}
	opt := gnft.WithSockOptions(func(c *netlink.Conn) error { return forceBuffers(c, bytes) })
	if dial != nil {
		opt = gnft.WithTestDial(dial)
	}
	conn, err := gnft.New(opt)
	if err != nil {
		return err
	}
	table := &gnft.Table{Name: TableName, Family: gnftFamily(f)}
	for _, g := range groups {
		set := &gnft.Set{Table: table, Name: g.container}
		for _, els := range messages(g.elements) {
			if g.del {
				err = conn.SetDeleteElements(set, els)
			} else {
				err = conn.SetAddElements(set, els)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", g.container, err)
			}
		}
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("netlink batch of %d element operations: %w", len(ops), err)
	}
	return nil
}
