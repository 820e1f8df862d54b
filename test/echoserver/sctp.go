package main

// SCTP without kernel SCTP sockets: this kernel may lack the sctp module (socket
// (AF_INET, SOCK_STREAM, IPPROTO_SCTP) fails with EPROTONOSUPPORT), yet netfilter's
// SCTP conntrack and NAT work regardless. So echoserver speaks just enough SCTP over
// raw sockets to put real SCTP packets through the proxy rules: the client sends an
// INIT, the server answers with an INIT-ACK whose State Cookie carries the usual
// answer line ("NAME SEEN_IP:PORT"). Conntrack tracks that exchange like the start of
// a real association, so DNAT, masquerade and conntrack cleanup apply to it.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log"
	"math/rand/v2"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	sctpInit       = 1
	sctpInitAck    = 2
	sctpCookieType = 7
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// sctpPacket builds a packet with one chunk and a correct CRC32c checksum.
func sctpPacket(sport, dport uint16, vtag uint32, chunkType byte, body []byte) []byte {
	chunkLen := 4 + len(body)
	pkt := make([]byte, 12+chunkLen+(4-chunkLen%4)%4)
	binary.BigEndian.PutUint16(pkt[0:], sport)
	binary.BigEndian.PutUint16(pkt[2:], dport)
	binary.BigEndian.PutUint32(pkt[4:], vtag)
	pkt[12] = chunkType
	binary.BigEndian.PutUint16(pkt[14:], uint16(chunkLen))
	copy(pkt[16:], body)
	binary.LittleEndian.PutUint32(pkt[8:], crc32.Checksum(pkt, castagnoli))
	return pkt
}

// initBody is the fixed part of an INIT or INIT-ACK chunk, plus optional parameters.
func initBody(tag, tsn uint32, params []byte) []byte {
	b := make([]byte, 16, 16+len(params))
	binary.BigEndian.PutUint32(b[0:], tag)
	binary.BigEndian.PutUint32(b[4:], 65535) // a_rwnd
	binary.BigEndian.PutUint16(b[8:], 1)     // outbound streams
	binary.BigEndian.PutUint16(b[10:], 1)    // inbound streams
	binary.BigEndian.PutUint32(b[12:], tsn)
	return append(b, params...)
}

// parsedSCTP is the part of an SCTP packet the echo exchange uses.
type parsedSCTP struct {
	sport, dport uint16
	vtag         uint32
	chunk        byte
	initTag      uint32 // INIT / INIT-ACK only
	cookie       string // INIT-ACK only
}

func parseSCTP(b []byte) (parsedSCTP, bool) {
	var p parsedSCTP
	if len(b) < 16 {
		return p, false
	}
	p.sport, p.dport = binary.BigEndian.Uint16(b[0:]), binary.BigEndian.Uint16(b[2:])
	p.vtag = binary.BigEndian.Uint32(b[4:])
	p.chunk = b[12]
	chunkLen := int(binary.BigEndian.Uint16(b[14:]))
	if chunkLen < 4 || 12+chunkLen > len(b) {
		return p, false
	}
	body := b[16 : 12+chunkLen]
	if (p.chunk == sctpInit || p.chunk == sctpInitAck) && len(body) >= 16 {
		p.initTag = binary.BigEndian.Uint32(body[0:])
		for params := body[16:]; len(params) >= 4; {
			typ, l := binary.BigEndian.Uint16(params[0:]), int(binary.BigEndian.Uint16(params[2:]))
			if l < 4 || l > len(params) {
				break
			}
			if typ == sctpCookieType {
				p.cookie = string(params[4:l])
			}
			params = params[min(len(params), (l+3)&^3):]
		}
	}
	return p, true
}

// rawSCTP opens a raw socket for SCTP of the address family of ip.
func rawSCTP(v6 bool) (int, error) {
	if v6 {
		return unix.Socket(unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_SCTP)
	}
	return unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_SCTP)
}

// recvSCTP reads one packet and returns its SCTP part and source address; IPv4 raw
// sockets deliver the IP header too, IPv6 ones do not.
func recvSCTP(fd int, buf []byte, v6 bool) ([]byte, netip.Addr, error) {
	n, from, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return nil, netip.Addr{}, err
	}
	switch sa := from.(type) {
	case *unix.SockaddrInet6:
		return buf[:n], netip.AddrFrom16(sa.Addr), nil
	case *unix.SockaddrInet4:
		if v6 || n < 20 {
			return nil, netip.Addr{}, errors.New("short packet")
		}
		ihl := int(buf[0]&0x0f) * 4
		if ihl < 20 || ihl > n {
			return nil, netip.Addr{}, errors.New("bad IPv4 header")
		}
		return buf[ihl:n], netip.AddrFrom4(sa.Addr), nil
	}
	return nil, netip.Addr{}, fmt.Errorf("unexpected source address %T", from)
}

func sockaddr(ip netip.Addr) unix.Sockaddr {
	if ip.Is4() {
		return &unix.SockaddrInet4{Addr: ip.As4()}
	}
	return &unix.SockaddrInet6{Addr: ip.As16()}
}

// serveSCTP answers INITs to the given ports on one family's raw socket.
func serveSCTP(fd int, v6 bool, ports []int, name string, logger *log.Logger) {
	want := map[uint16]bool{}
	for _, p := range ports {
		want[uint16(p)] = true
	}
	buf := make([]byte, 65536)
	for {
		b, from, err := recvSCTP(fd, buf, v6)
		if err != nil {
			logger.Printf("sctp recv: %v", err)
			continue
		}
		p, ok := parseSCTP(b)
		if !ok || p.chunk != sctpInit || !want[p.dport] {
			continue
		}
		seen := netip.AddrPortFrom(from, p.sport).String()
		cookie := []byte(name + " " + seen + "\n")
		param := make([]byte, 4, 4+len(cookie)+3)
		binary.BigEndian.PutUint16(param[0:], sctpCookieType)
		binary.BigEndian.PutUint16(param[2:], uint16(4+len(cookie)))
		param = append(param, cookie...)
		for len(param)%4 != 0 {
			param = append(param, 0)
		}
		reply := sctpPacket(p.dport, p.sport, p.initTag, sctpInitAck, initBody(rand.Uint32()|1, rand.Uint32(), param))
		if err := unix.Sendto(fd, reply, 0, sockaddr(from)); err != nil {
			logger.Printf("sctp send to %s: %v", seen, err)
		}
	}
}

// startSCTP opens the raw sockets of both families and serves the ports on them.
func startSCTP(ports []int, name string, logger *log.Logger) error {
	for _, v6 := range []bool{false, true} {
		fd, err := rawSCTP(v6)
		if err != nil {
			return fmt.Errorf("raw SCTP socket (v6=%v): %w", v6, err)
		}
		go serveSCTP(fd, v6, ports, name, logger)
	}
	return nil
}

// sctpRequest sends one INIT to target from sourcePort (random when 0) and waits for
// the matching INIT-ACK. A REJECT's ICMP error is not seen on a raw SCTP socket, so
// a rejected request reads as a timeout.
func sctpRequest(o clientOpts) Reply {
	target, err := netip.ParseAddrPort(o.target)
	if err != nil {
		return Reply{Error: "other: " + err.Error()}
	}
	dst := target.Addr().Unmap()
	v6 := dst.Is6()
	fd, err := rawSCTP(v6)
	if err != nil {
		return Reply{Error: "other: " + err.Error()}
	}
	defer func() { _ = unix.Close(fd) }()
	if o.sourceIP != "" {
		src, err := netip.ParseAddr(o.sourceIP)
		if err != nil {
			return Reply{Error: "other: " + err.Error()}
		}
		if err := unix.Bind(fd, sockaddr(src.Unmap())); err != nil {
			return Reply{Error: "other: bind: " + err.Error()}
		}
	}
	sport := uint16(o.sourcePort)
	if sport == 0 {
		sport = uint16(32768 + rand.IntN(28000))
	}
	tag := rand.Uint32() | 1
	init := sctpPacket(sport, target.Port(), 0, sctpInit, initBody(tag, rand.Uint32(), nil))
	if err := unix.Sendto(fd, init, 0, sockaddr(dst)); err != nil {
		return Reply{Error: classify(err)}
	}
	deadline := time.Now().Add(o.timeout)
	buf := make([]byte, 65536)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return Reply{Error: "timeout"}
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		b, _, err := recvSCTP(fd, buf, v6)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EWOULDBLOCK) {
				return Reply{Error: "timeout"}
			}
			continue
		}
		p, ok := parseSCTP(b)
		if ok && p.chunk == sctpInitAck && p.vtag == tag && p.sport == target.Port() && p.dport == sport {
			return parseAnswer(strings.TrimRight(p.cookie, "\x00"))
		}
	}
}
