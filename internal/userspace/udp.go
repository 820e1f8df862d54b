package userspace

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// udpListener relays datagrams on one Service address and port. Each client
// (address, port, and the local address it sent to) is a flow with its own connected
// socket to one endpoint; replies come back through that socket and leave from the
// Service address. Flows end after udpIdle without traffic either way, when their
// endpoint leaves the Service, or when the endpoint answers with ICMP unreachable.
type udpListener struct {
	key      listenerKey
	env      *relayEnv
	logger   klog.Logger
	conn     *net.UDPConn
	wildcard bool // bound to 0.0.0.0 or ::: replies must name their source address
	route    atomic.Pointer[route]

	mu     sync.Mutex
	flows  map[flowKey]*udpFlow
	closed bool
	wg     sync.WaitGroup
	// dropped counts datagrams dropped because the flow table was full.
	dropped atomic.Int64
}

type flowKey struct {
	client netip.AddrPort
	local  netip.Addr
}

type udpFlow struct {
	key      flowKey
	endpoint netip.AddrPort
	up       *net.UDPConn
	// lastActive is the time (UnixNano) of the last datagram in either direction.
	lastActive atomic.Int64
}

func startUDP(logger klog.Logger, key listenerKey, env *relayEnv, r *route) (*udpListener, error) {
	wildcard := key.addr.Addr().IsUnspecified()
	lc := net.ListenConfig{Control: listenControl(env.family, wildcard)}
	pc, err := lc.ListenPacket(context.Background(), env.network("udp"), key.addr.String())
	if err != nil {
		return nil, fmt.Errorf("listen on %s for %s: %w", key, r.spec.service, err)
	}
	l := &udpListener{key: key, env: env, logger: logger, conn: pc.(*net.UDPConn), wildcard: wildcard, flows: map[flowKey]*udpFlow{}}
	l.route.Store(r)
	l.wg.Add(1)
	go l.readLoop()
	return l, nil
}

func (l *udpListener) setRoute(r *route) { l.route.Store(r) }

func (l *udpListener) stop() {
	l.mu.Lock()
	l.closed = true
	_ = l.conn.Close()
	for _, f := range l.flows {
		_ = f.up.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

// pruneFlows closes the flows whose endpoint is no longer in the Service, so their
// next datagram picks a current endpoint (what conntrack cleanup does in the kernel
// modes). Flows to endpoints still present keep going.
func (l *udpListener) pruneFlows() {
	bal := l.route.Load().bal
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, f := range l.flows {
		if !bal.contains(f.endpoint) {
			delete(l.flows, k)
			_ = f.up.Close()
		}
	}
}

// flowCount is the number of live flows.
func (l *udpListener) flowCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.flows)
}

func (l *udpListener) readLoop() {
	defer l.wg.Done()
	buf := make([]byte, 65535)
	oob := make([]byte, 128)
	for {
		n, oobn, _, from, err := l.conn.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			l.logger.V(4).Info("UDP read failed", "listener", l.key, "err", err)
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		local := l.key.addr.Addr()
		if l.wildcard {
			if dst, ok := pktinfoDst(oob[:oobn]); ok {
				local = dst
			}
		}
		f := l.flowFor(flowKey{client: from, local: local})
		if f == nil {
			continue
		}
		f.lastActive.Store(time.Now().UnixNano())
		if _, err := f.up.Write(buf[:n]); err != nil {
			l.logger.V(4).Info("UDP send to endpoint failed", "listener", l.key, "endpoint", f.endpoint, "err", err)
		}
	}
}

// flowFor returns the client's flow, opening one to a chosen endpoint if needed; nil
// means the datagram is dropped.
func (l *udpListener) flowFor(k flowKey) *udpFlow {
	l.mu.Lock()
	defer l.mu.Unlock()
	if f, ok := l.flows[k]; ok {
		return f
	}
	if l.closed {
		return nil
	}
	if len(l.flows) >= l.env.maxUDPFlows {
		if l.dropped.Add(1)%1000 == 1 {
			l.logger.Info("UDP flow table full; dropping datagrams of new flows", "listener", l.key, "flows", len(l.flows), "dropped", l.dropped.Load())
		}
		return nil
	}
	r := l.route.Load()
	if !r.allowed(k.client.Addr()) {
		return nil
	}
	ep, ok := r.bal.pick(r.setFor(k.client.Addr(), l.env), k.client.Addr(), nil)
	if !ok {
		return nil
	}
	up, err := net.DialUDP(l.env.network("udp"), nil, net.UDPAddrFromAddrPort(ep))
	if err != nil {
		l.logger.V(2).Info("Cannot open a UDP flow to the endpoint", "servicePort", r.spec.service, "endpoint", ep, "err", err)
		return nil
	}
	f := &udpFlow{key: k, endpoint: ep, up: up}
	f.lastActive.Store(time.Now().UnixNano())
	l.flows[k] = f
	l.wg.Add(1)
	go l.replyLoop(f)
	return f
}

// replyLoop carries the endpoint's datagrams back to the client until the flow is idle
// for udpIdle or closed.
func (l *udpListener) replyLoop(f *udpFlow) {
	defer l.wg.Done()
	defer l.endFlow(f)
	buf := make([]byte, 65535)
	var oob []byte
	if l.wildcard {
		oob = pktinfoSrc(f.key.local)
	}
	for {
		deadline := time.Unix(0, f.lastActive.Load()).Add(l.env.udpIdle)
		if !time.Now().Before(deadline) {
			return
		}
		if err := f.up.SetReadDeadline(deadline); err != nil {
			return // the flow's socket is closed
		}
		n, err := f.up.Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue // re-check: the client may have sent meanwhile
			}
			if errors.Is(err, syscall.ECONNREFUSED) {
				l.logger.V(4).Info("Endpoint refused a UDP flow; closing it", "listener", l.key, "endpoint", f.endpoint)
			}
			return
		}
		f.lastActive.Store(time.Now().UnixNano())
		if _, _, err := l.conn.WriteMsgUDPAddrPort(buf[:n], oob, f.key.client); err != nil {
			l.logger.V(4).Info("UDP reply to client failed", "listener", l.key, "client", f.key.client, "err", err)
		}
	}
}

func (l *udpListener) endFlow(f *udpFlow) {
	_ = f.up.Close()
	l.mu.Lock()
	if l.flows[f.key] == f {
		delete(l.flows, f.key)
	}
	l.mu.Unlock()
}

// pktinfoDst reads a datagram's destination address from its IP_PKTINFO or
// IPV6_PKTINFO control message.
func pktinfoDst(oob []byte) (netip.Addr, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return netip.Addr{}, false
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.SOL_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= unix.SizeofInet4Pktinfo:
			// struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }: addr
			// is the header's destination.
			return netip.AddrFrom4([4]byte(m.Data[8:12])), true
		case m.Header.Level == unix.SOL_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= unix.SizeofInet6Pktinfo:
			return netip.AddrFrom16([16]byte(m.Data[0:16])).Unmap(), true
		}
	}
	return netip.Addr{}, false
}

// pktinfoSrc builds the control message that makes a reply leave from src.
func pktinfoSrc(src netip.Addr) []byte {
	if src.Is4() {
		return unix.PktInfo4(&unix.Inet4Pktinfo{Spec_dst: src.As4()})
	}
	return unix.PktInfo6(&unix.Inet6Pktinfo{Addr: src.As16()})
}
