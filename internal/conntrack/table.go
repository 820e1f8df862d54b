package conntrack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/kproxy/kproxy/internal/nlattr"
)

// We talk ctnetlink ourselves instead of calling netlink.ConntrackDeleteFilters
// because netlink v1.3.1 only parses ports of TCP and UDP tuples: SCTP flows come
// back with port 0 and could never match a target. The library still provides the
// socket, request and attribute plumbing and the ConntrackFlow type the matcher uses.

// socketTimeout bounds each send and receive so a wedged netlink socket cannot stall
// the sync loop for ever.
const socketTimeout = 30 * time.Second

// table is a ctnetlink connection to the conntrack table of one network namespace.
type table struct {
	ns     netns.NsHandle // netns.None() means the namespace of the opening thread
	socket *nl.SocketHandle
}

// open returns the socket, creating it on first use.
func (t *table) open() (map[int]*nl.SocketHandle, error) {
	if t.socket == nil {
		s, err := nl.GetNetlinkSocketAt(t.ns, netns.None(), unix.NETLINK_NETFILTER)
		if err != nil {
			return nil, fmt.Errorf("opening ctnetlink socket: %w", err)
		}
		tv := unix.NsecToTimeval(socketTimeout.Nanoseconds())
		if err := s.SetSendTimeout(&tv); err != nil {
			s.Close()
			return nil, fmt.Errorf("setting ctnetlink send timeout: %w", err)
		}
		if err := s.SetReceiveTimeout(&tv); err != nil {
			s.Close()
			return nil, fmt.Errorf("setting ctnetlink receive timeout: %w", err)
		}
		t.socket = &nl.SocketHandle{Socket: s}
	}
	return map[int]*nl.SocketHandle{unix.NETLINK_NETFILTER: t.socket}, nil
}

// reset drops the socket after an error, so that whatever the kernel still had
// queued on it cannot confuse the next request.
func (t *table) reset() {
	if t.socket != nil {
		t.socket.Close()
		t.socket = nil
	}
}

// request builds a ctnetlink request for one family on the shared socket.
func (t *table) request(op int, flags int, family uint8) (*nl.NetlinkRequest, error) {
	sockets, err := t.open()
	if err != nil {
		return nil, err
	}
	req := nl.NewNetlinkRequest(netlink.ConntrackTable<<8|op, flags)
	req.Sockets = sockets
	req.AddData(&nl.Nfgenmsg{NfgenFamily: family, Version: nl.NFNETLINK_V0})
	return req, nil
}

// collect lists the family's table once and returns the raw messages of the flows
// for which match is true. Only matching messages are kept, so memory stays small
// on a table of a million entries. An interrupted dump (the table changed while it
// was read) still returns what was seen, with an error wrapping
// netlink.ErrDumpInterrupted.
func (t *table) collect(family uint8, match func(*netlink.ConntrackFlow) bool) (matched [][]byte, seen int, err error) {
	req, err := t.request(nl.IPCTNL_MSG_CT_GET, unix.NLM_F_DUMP, family)
	if err != nil {
		return nil, 0, err
	}
	var parseErr error
	err = req.ExecuteIter(unix.NETLINK_NETFILTER, 0, func(msg []byte) bool {
		seen++
		flow, perr := parseFlow(msg)
		if perr != nil {
			parseErr = perr
			return true // skip the odd message, keep cleaning the rest
		}
		if match(flow) {
			matched = append(matched, append([]byte(nil), msg...))
		}
		return true
	})
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.reset()
		return nil, seen, fmt.Errorf("listing conntrack table (family %d): %w", family, err)
	}
	if parseErr != nil {
		err = errors.Join(err, fmt.Errorf("parsing conntrack entry: %w", parseErr))
	}
	return matched, seen, err
}

// remove deletes the flows of raw dump messages, returning how many it deleted.
// Flows that vanished in the meantime are neither counted nor errors.
func (t *table) remove(family uint8, msgs [][]byte) (int, error) {
	deleted, failed := 0, 0
	var firstErr error
	for _, msg := range msgs {
		req, err := t.request(nl.IPCTNL_MSG_CT_DELETE, unix.NLM_F_ACK, family)
		if err != nil {
			return deleted, err
		}
		// The dumped attributes (both tuples, zone and the entry's id) identify the
		// entry exactly; the kernel refuses if the id no longer matches.
		req.AddRawData(msg[nl.SizeofNfgenmsg:])
		_, err = req.Execute(unix.NETLINK_NETFILTER, 0)
		switch {
		case err == nil:
			deleted++
		case errors.Is(err, unix.ENOENT):
		default:
			failed++
			if firstErr == nil {
				firstErr = err
			}
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EBADF) {
				t.reset()
			}
		}
	}
	if failed > 0 {
		return deleted, fmt.Errorf("deleting %d of %d stale conntrack entries failed, first error: %w", failed, len(msgs), firstErr)
	}
	return deleted, nil
}

// parseFlow decodes the tuples of one ctnetlink message (nfgenmsg header followed
// by attributes) into a netlink.ConntrackFlow, ports included for every protocol
// that has them.
func parseFlow(msg []byte) (*netlink.ConntrackFlow, error) {
	if len(msg) < nl.SizeofNfgenmsg {
		return nil, fmt.Errorf("message of %d bytes is shorter than its header", len(msg))
	}
	flow := &netlink.ConntrackFlow{FamilyType: msg[0]}
	attrs, err := nlattr.Parse(msg[nl.SizeofNfgenmsg:])
	if err != nil {
		return nil, err
	}
	for _, a := range attrs {
		switch a.Attr.Type & nl.NLA_TYPE_MASK {
		case nl.CTA_TUPLE_ORIG:
			err = parseTuple(a.Value, &flow.Forward)
		case nl.CTA_TUPLE_REPLY:
			err = parseTuple(a.Value, &flow.Reverse)
		case nl.CTA_ZONE:
			if len(a.Value) >= 2 {
				flow.Zone = binary.BigEndian.Uint16(a.Value)
			}
		case nl.CTA_MARK:
			if len(a.Value) >= 4 {
				flow.Mark = binary.BigEndian.Uint32(a.Value)
			}
		}
		if err != nil {
			return nil, err
		}
	}
	return flow, nil
}

// parseTuple decodes a CTA_TUPLE_ORIG or CTA_TUPLE_REPLY payload.
func parseTuple(b []byte, tuple *netlink.IPTuple) error {
	attrs, err := nlattr.Parse(b)
	if err != nil {
		return fmt.Errorf("tuple: %w", err)
	}
	for _, a := range attrs {
		switch a.Attr.Type & nl.NLA_TYPE_MASK {
		case nl.CTA_TUPLE_IP:
			err = eachAttr(a.Value, func(a syscall.NetlinkRouteAttr) {
				switch a.Attr.Type & nl.NLA_TYPE_MASK {
				case nl.CTA_IP_V4_SRC, nl.CTA_IP_V6_SRC:
					tuple.SrcIP = append(tuple.SrcIP[:0], a.Value...)
				case nl.CTA_IP_V4_DST, nl.CTA_IP_V6_DST:
					tuple.DstIP = append(tuple.DstIP[:0], a.Value...)
				}
			})
		case nl.CTA_TUPLE_PROTO:
			err = eachAttr(a.Value, func(a syscall.NetlinkRouteAttr) {
				switch a.Attr.Type & nl.NLA_TYPE_MASK {
				case nl.CTA_PROTO_NUM:
					if len(a.Value) >= 1 {
						tuple.Protocol = a.Value[0]
					}
				case nl.CTA_PROTO_SRC_PORT:
					if len(a.Value) >= 2 {
						tuple.SrcPort = binary.BigEndian.Uint16(a.Value)
					}
				case nl.CTA_PROTO_DST_PORT:
					if len(a.Value) >= 2 {
						tuple.DstPort = binary.BigEndian.Uint16(a.Value)
					}
				}
			})
		}
		if err != nil {
			return fmt.Errorf("tuple: %w", err)
		}
	}
	return nil
}

// eachAttr calls f for every attribute nested in b.
func eachAttr(b []byte, f func(syscall.NetlinkRouteAttr)) error {
	attrs, err := nlattr.Parse(b)
	if err != nil {
		return err
	}
	for _, a := range attrs {
		f(a)
	}
	return nil
}
