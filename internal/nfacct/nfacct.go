// Package nfacct creates and reads netfilter accounting objects (nfnetlink_acct):
// named packet and byte counters that an iptables rule increments with
// "-m nfacct --nfacct-name NAME". Upstream kube-proxy counts two events this way and
// exports them as metrics; kproxy does the same with the same names.
//
// The kernel interface is three netlink messages of the NFNL_SUBSYS_ACCT subsystem;
// vishvananda/netlink carries them but has no helper for this subsystem.
package nfacct

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/kproxy/kproxy/internal/nlattr"
)

// The counters upstream kube-proxy's iptables mode keeps, by nfacct object name.
const (
	// LocalhostNodePortsAccepted counts packets to a NodePort on 127.0.0.0/8.
	LocalhostNodePortsAccepted = "localhost_nps_accepted_pkts"
	// CTStateInvalidDropped counts packets KUBE-FORWARD drops as conntrack INVALID.
	CTStateInvalidDropped = "ct_state_invalid_dropped_pkts"
)

// From linux/netfilter/nfnetlink.h and nfnetlink_acct.h.
const (
	subsysAcct = 7
	msgNew     = 0
	msgGet     = 1
	attrName   = 1
	attrPkts   = 2
	attrBytes  = 3
)

// Counter is an accounting object's value.
type Counter struct {
	Packets, Bytes uint64
}

// Ensure creates the accounting object name if it does not exist; an existing one
// keeps its counts. It fails where the kernel has no nfnetlink_acct.
func Ensure(name string) error {
	if _, err := Get(name); err == nil {
		return nil
	}
	req := request(msgNew, unix.NLM_F_CREATE|unix.NLM_F_ACK, name)
	// The kernel answers EBUSY for an object that exists (made between the Get and
	// now): that is the state wanted.
	if _, err := req.Execute(unix.NETLINK_NETFILTER, 0); err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("nfacct: create %q: %w", name, err)
	}
	return nil
}

// Get reads the accounting object name.
func Get(name string) (Counter, error) {
	req := request(msgGet, unix.NLM_F_ACK, name)
	msgs, err := req.Execute(unix.NETLINK_NETFILTER, 0)
	if err != nil {
		return Counter{}, fmt.Errorf("nfacct: get %q: %w", name, err)
	}
	if len(msgs) != 1 {
		return Counter{}, fmt.Errorf("nfacct: get %q: %d answers, want 1", name, len(msgs))
	}
	return decode(msgs[0])
}

func request(msg int, flags int, name string) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest(subsysAcct<<8|msg, flags)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: unix.AF_UNSPEC, Version: nl.NFNETLINK_V0})
	req.AddData(nl.NewRtAttr(attrName, nl.ZeroTerminated(name)))
	return req
}

// decode reads the counters from an answer: a nfgenmsg header, then attributes.
func decode(msg []byte) (Counter, error) {
	if len(msg) < nl.SizeofNfgenmsg {
		return Counter{}, errors.New("nfacct: short answer")
	}
	attrs, err := nlattr.Parse(msg[nl.SizeofNfgenmsg:])
	if err != nil {
		return Counter{}, fmt.Errorf("nfacct: answer attributes: %w", err)
	}
	var c Counter
	var seen int
	for _, a := range attrs {
		switch a.Attr.Type &^ unix.NLA_F_NESTED {
		case attrPkts:
			if len(a.Value) != 8 {
				return Counter{}, fmt.Errorf("nfacct: packets attribute of %d bytes", len(a.Value))
			}
			c.Packets = binary.BigEndian.Uint64(a.Value)
			seen++
		case attrBytes:
			if len(a.Value) != 8 {
				return Counter{}, fmt.Errorf("nfacct: bytes attribute of %d bytes", len(a.Value))
			}
			c.Bytes = binary.BigEndian.Uint64(a.Value)
			seen++
		}
	}
	if seen != 2 {
		return Counter{}, errors.New("nfacct: answer without packet and byte counts")
	}
	return c, nil
}
