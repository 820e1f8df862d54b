package conntrack

import (
	"encoding/binary"
	"net"
	"testing"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// tupleAttr builds a CTA_TUPLE_ORIG or CTA_TUPLE_REPLY attribute as the kernel
// sends it.
func tupleAttr(kind int, proto uint8, src, dst net.IP, sport, dport uint16) *nl.RtAttr {
	srcType, dstType := nl.CTA_IP_V4_SRC, nl.CTA_IP_V4_DST
	if src.To4() == nil {
		srcType, dstType = nl.CTA_IP_V6_SRC, nl.CTA_IP_V6_DST
	} else {
		src, dst = src.To4(), dst.To4()
	}
	tuple := nl.NewRtAttr(unix.NLA_F_NESTED|kind, nil)
	ip := tuple.AddRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_IP, nil)
	ip.AddRtAttr(srcType, src)
	ip.AddRtAttr(dstType, dst)
	p := tuple.AddRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_PROTO, nil)
	p.AddRtAttr(nl.CTA_PROTO_NUM, []byte{proto})
	p.AddRtAttr(nl.CTA_PROTO_SRC_PORT, binary.BigEndian.AppendUint16(nil, sport))
	p.AddRtAttr(nl.CTA_PROTO_DST_PORT, binary.BigEndian.AppendUint16(nil, dport))
	return tuple
}

func message(family uint8, attrs ...*nl.RtAttr) []byte {
	msg := []byte{family, nl.NFNETLINK_V0, 0, 0}
	for _, a := range attrs {
		msg = append(msg, a.Serialize()...)
	}
	return msg
}

func TestParseFlowKeepsSCTPPorts(t *testing.T) {
	client, svc, ep := net.ParseIP("10.0.0.1"), net.ParseIP("10.96.0.30"), net.ParseIP("10.244.3.3")
	mark := nl.NewRtAttr(nl.CTA_MARK, binary.BigEndian.AppendUint32(nil, 0x4000))
	msg := message(unix.AF_INET,
		tupleAttr(nl.CTA_TUPLE_ORIG, sctp, client, svc, 40000, 3868),
		tupleAttr(nl.CTA_TUPLE_REPLY, sctp, ep, client, 3869, 40000),
		mark)
	f, err := parseFlow(msg)
	if err != nil {
		t.Fatal(err)
	}
	if f.FamilyType != unix.AF_INET || f.Mark != 0x4000 {
		t.Errorf("family %d mark %#x, want %d and 0x4000", f.FamilyType, f.Mark, unix.AF_INET)
	}
	if f.Forward.Protocol != sctp || !f.Forward.SrcIP.Equal(client) || !f.Forward.DstIP.Equal(svc) ||
		f.Forward.SrcPort != 40000 || f.Forward.DstPort != 3868 {
		t.Errorf("forward tuple %+v", f.Forward)
	}
	if !f.Reverse.SrcIP.Equal(ep) || f.Reverse.SrcPort != 3869 || f.Reverse.DstPort != 40000 {
		t.Errorf("reply tuple %+v", f.Reverse)
	}
}

func TestParseFlowIPv6UDP(t *testing.T) {
	client, svc, ep := net.ParseIP("fd00::1"), net.ParseIP("fd00:96::10"), net.ParseIP("fd00:244::5")
	msg := message(unix.AF_INET6,
		tupleAttr(nl.CTA_TUPLE_ORIG, udp, client, svc, 1234, 53),
		tupleAttr(nl.CTA_TUPLE_REPLY, udp, ep, client, 5353, 1234))
	f, err := parseFlow(msg)
	if err != nil {
		t.Fatal(err)
	}
	if !f.Forward.DstIP.Equal(svc) || f.Forward.DstPort != 53 || !f.Reverse.SrcIP.Equal(ep) || f.Reverse.SrcPort != 5353 {
		t.Errorf("parsed %s", f)
	}
}

func TestParseFlowRejectsTruncatedMessage(t *testing.T) {
	msg := message(unix.AF_INET, tupleAttr(nl.CTA_TUPLE_ORIG, udp, net.ParseIP("10.0.0.1"), net.ParseIP("10.0.0.2"), 1, 2))
	if _, err := parseFlow(msg[:len(msg)-6]); err == nil {
		t.Error("truncated message parsed without error")
	}
	if _, err := parseFlow(msg[:2]); err == nil {
		t.Error("message shorter than its header parsed without error")
	}
}
