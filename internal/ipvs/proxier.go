package ipvs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	libipvs "github.com/moby/ipvs"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/kproxy/kproxy/internal/iptables"
	"github.com/kproxy/kproxy/internal/metrics"
	"github.com/kproxy/kproxy/internal/model"
)

// Config holds the settings of one family's IPVS proxier.
type Config struct {
	Family        model.Family
	Scheduler     string // "" means rr
	MasqueradeAll bool
	MasqueradeBit int
	// ExcludeCIDRs are addresses whose virtual servers kproxy never deletes.
	ExcludeCIDRs []netip.Prefix
	StrictARP    bool
	// TCPTimeout, TCPFinTimeout and UDPTimeout set IPVS's own timeouts when > 0.
	TCPTimeout, TCPFinTimeout, UDPTimeout time.Duration
	// DrainInterval is how often draining real servers are checked; default 2s.
	DrainInterval time.Duration
}

// Proxier programs one IP family's Services into IPVS.
type Proxier struct {
	cfg     Config
	h       Handle
	links   Links
	sets    IPSet
	ipt     IPTables
	metrics *metrics.Metrics
	// clock paces the drain loop and the flush checks.
	clock clock.WithTicker

	// mu serialises use of h between Sync and the drain loop.
	mu        sync.Mutex
	graceful  *graceful
	lastSets  Sets   // set contents the kernel holds after the last sync
	lastRules []byte // the iptables input last restored
	synced    bool
	reported  map[string]string // gaps already logged, per Service port
	// flushCheckedAt is when Flushed last ran iptables.
	flushCheckedAt time.Time
	// lastPlan is the last plan applied; Flushed expects its VIPs on kube-ipvs0.
	lastPlan *Plan
}

// NewProxier returns a Proxier that reports to m and reads the time from clk; it
// touches no kernel state until Setup or Sync.
func NewProxier(cfg Config, h Handle, links Links, sets IPSet, ipt IPTables, m *metrics.Metrics, clk clock.WithTicker) *Proxier {
	if cfg.Scheduler == "" {
		cfg.Scheduler = "rr"
	}
	if cfg.DrainInterval == 0 {
		cfg.DrainInterval = 2 * time.Second
	}
	return &Proxier{cfg: cfg, h: h, links: links, sets: sets, ipt: ipt, metrics: m, clock: clk,
		graceful: newGraceful(), reported: map[string]string{}}
}

// Setup prepares the kernel: the sysctls IPVS mode relies on, IPVS timeouts and a check
// that the scheduler exists.
func (p *Proxier) Setup(sysctls SysctlWriter) error {
	if err := setSysctls(sysctls, p.cfg.StrictARP); err != nil {
		return err
	}
	if p.cfg.TCPTimeout > 0 || p.cfg.TCPFinTimeout > 0 || p.cfg.UDPTimeout > 0 {
		if err := p.h.SetConfig(&libipvs.Config{TimeoutTCP: p.cfg.TCPTimeout, TimeoutTCPFin: p.cfg.TCPFinTimeout, TimeoutUDP: p.cfg.UDPTimeout}); err != nil {
			return fmt.Errorf("ipvs: setting the tcp/tcpfin/udp timeouts: %w", err)
		}
	}
	return checkScheduler(p.h, p.cfg.Family, p.cfg.Scheduler)
}

// checkScheduler creates and deletes a throw-away virtual server with the scheduler,
// as upstream does, so a missing scheduler fails at start rather than at each sync.
func checkScheduler(h Handle, f model.Family, sched string) error {
	addr := netip.MustParseAddr("198.51.100.1") // TEST-NET-2: never a real address
	if f == model.IPv6 {
		addr = netip.MustParseAddr("2001:db8::1")
	}
	vs := &VirtualServer{Key: VSKey{Addr: addr, Protocol: "TCP", Port: 1}, Scheduler: sched}
	s := toService(vs)
	if err := h.NewService(s); err != nil {
		return fmt.Errorf("ipvs: the kernel refuses scheduler %q (is module ip_vs_%s available?): %w", sched, sched, err)
	}
	return h.DelService(s)
}

// RunBackground is part of proxy.Background: every DrainInterval until ctx ends, it
// deletes the draining real servers whose connections are gone.
func (p *Proxier) RunBackground(ctx context.Context) {
	logger := klog.FromContext(ctx)
	t := p.clock.NewTicker(p.cfg.DrainInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		if p.graceful.Len() == 0 {
			continue
		}
		p.mu.Lock()
		p.graceful.process(logger, p.h)
		p.mu.Unlock()
	}
}

// Family is the IP family this proxier programs.
func (p *Proxier) Family() model.Family { return p.cfg.Family }

// Sync makes the kernel match the snapshot. IPVS state is always compared with the
// kernel's; ipsets and iptables rules are rewritten in full when full, else only
// what changed. It logs to ctx's logger.
func (p *Proxier) Sync(ctx context.Context, snap *model.Snapshot, full bool) error {
	logger := klog.FromContext(ctx)
	start := p.clock.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.cfg.Family
	full = full || !p.synced

	// Where NodePorts answer and how local traffic is told apart: the node's
	// parameters of this sync.
	node, ok := snap.NodeParams(f)
	if !ok {
		node.NodePortAll = true // driven without a resolver: every address
	}
	all, npIPs := node.NodePortAll, node.NodePortIPs
	if all {
		local, err := p.links.LocalAddrs(f, DummyInterface)
		if err != nil {
			return err
		}
		npIPs = local
	}
	npIPs = usableNodePortIPs(npIPs, f)
	plan := BuildPlan(PlanInput{Family: f, Snapshot: snap, Scheduler: p.cfg.Scheduler, NodePortIPs: npIPs})

	fail := func(err error) error {
		p.synced = false
		p.lastSets, p.lastRules = nil, nil
		return fmt.Errorf("ipvs %s sync (full=%v): %w", f, full, err)
	}
	if err := p.links.EnsureDummy(DummyInterface); err != nil {
		return fail(err)
	}
	// ipsets before the rules that match them. The ipset restore and the two
	// iptables-save runs are independent, so they run at once: each is a program
	// start, which is what a sync mostly waits for where execs are slow (a loaded
	// node, the emulated test guest).
	changed := changedSets(p.lastSets, plan.Sets)
	if full {
		changed = changedSets(nil, plan.Sets)
	}
	setsDone := make(chan error, 1)
	if len(changed) > 0 {
		go func() { setsDone <- p.sets.Restore(SetsRestore(f, plan.Sets, changed)) }()
	} else {
		setsDone <- nil
	}
	rules := Rules(p.ruleParams(node.LocalTraffic, all, npIPs))
	writeRules := full || !bytes.Equal(rules, p.lastRules)
	var natSave, filterSave []byte
	var saveErr error
	if writeRules {
		natSave, filterSave, saveErr = p.saveNATAndFilter()
	}
	if err := <-setsDone; err != nil {
		return fail(err)
	}
	p.lastSets = plan.Sets
	if saveErr != nil {
		return fail(saveErr)
	}
	if writeRules {
		if err := p.ipt.Restore(restoreInput(rules, natSave, filterSave)); err != nil {
			return fail(fmt.Errorf("iptables restore: %w", err))
		}
		p.lastRules = rules
	}
	// Bind new addresses before their virtual servers exist, unbind old ones after.
	bound, err := p.links.Addrs(DummyInterface, f)
	if err != nil {
		return fail(err)
	}
	want := map[netip.Addr]bool{}
	for _, a := range plan.VIPs {
		want[a] = true
	}
	have := map[netip.Addr]bool{}
	var errs []error
	for _, a := range bound {
		have[a] = true
	}
	for _, a := range plan.VIPs {
		if !have[a] {
			if err := p.links.AddAddr(DummyInterface, a); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := reconcile(logger, p.h, f, plan.Servers, p.cfg.ExcludeCIDRs, p.graceful); err != nil {
		errs = append(errs, err)
	}
	for _, a := range bound {
		if !want[a] && !excluded(a, p.cfg.ExcludeCIDRs) {
			if err := p.links.DelAddr(DummyInterface, a); err != nil {
				errs = append(errs, err)
			}
		}
	}
	p.graceful.process(logger, p.h)
	if err := errors.Join(errs...); err != nil {
		return fail(err)
	}
	p.synced = true
	p.lastPlan = plan
	p.reportGaps(logger, plan)
	fam := f.String()
	p.metrics.NoLocalEndpointsTotal.WithLabelValues("internal", fam).Set(float64(plan.NoLocalEndpoints["internal"]))
	p.metrics.NoLocalEndpointsTotal.WithLabelValues("external", fam).Set(float64(plan.NoLocalEndpoints["external"]))
	logger.V(2).Info("Synced IPVS", "family", f, "full", full, "services", len(snap.Services),
		"virtualServers", len(plan.Servers), "vips", len(plan.VIPs), "setsRewritten", len(changed),
		"draining", p.graceful.Len(), "elapsed", p.clock.Since(start))
	return nil
}

// saveNATAndFilter runs iptables-save for the nat and the filter table at once.
func (p *Proxier) saveNATAndFilter() (nat, filter []byte, err error) {
	var filterErr error
	done := make(chan struct{})
	go func() {
		filter, filterErr = p.ipt.Save("filter")
		close(done)
	}()
	nat, err = p.ipt.Save("nat")
	<-done
	return nat, filter, errors.Join(err, filterErr)
}

func (p *Proxier) ruleParams(local model.LocalTraffic, all bool, npIPs []netip.Addr) RuleParams {
	return RuleParams{Family: p.cfg.Family, MasqueradeAll: p.cfg.MasqueradeAll, MasqueradeBit: p.cfg.MasqueradeBit,
		NotLocal: iptables.DetectorFor(local).NotLocalArgs(), NodePortAll: all, NodePortIPs: npIPs}
}

// usableNodePortIPs drops the addresses NodePorts never answer on in this mode:
// loopback (upstream's IPVS mode has no localhost NodePorts) and link-local ones.
func usableNodePortIPs(ips []netip.Addr, f model.Family) []netip.Addr {
	var out []netip.Addr
	seen := map[netip.Addr]bool{}
	for _, ip := range ips {
		if model.FamilyOf(ip) != f || ip.IsLoopback() || ip.IsLinkLocalUnicast() || seen[ip] {
			continue
		}
		seen[ip] = true
		out = append(out, ip)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

// reportGaps logs, once per Service port and content, the semantics IPVS cannot carry.
func (p *Proxier) reportGaps(logger klog.Logger, plan *Plan) {
	for name, gaps := range plan.Gaps {
		text := strings.Join(gaps, "; ")
		if p.reported[name] == text {
			continue
		}
		p.reported[name] = text
		logger.Info("Service semantics that IPVS mode cannot express (see docs/ipvs.md)", "servicePort", name, "family", p.cfg.Family, "gaps", text)
	}
	for name := range p.reported {
		if _, ok := plan.Gaps[name]; !ok {
			delete(p.reported, name)
		}
	}
}

// flushCheckInterval spaces the canary checks: each one runs iptables.
const flushCheckInterval = 5 * time.Second

// Flushed reports whether someone removed kproxy's canary chain or kube-ipvs0.
func (p *Proxier) Flushed(context.Context) bool {
	p.mu.Lock()
	synced, plan := p.synced, p.lastPlan
	checked := p.flushCheckedAt
	if synced && p.clock.Since(checked) >= flushCheckInterval {
		p.flushCheckedAt = p.clock.Now()
	}
	p.mu.Unlock()
	// The loop asks several times a second (proxy.Options.FlushCheckInterval); each
	// check runs iptables, so look at most every flushCheckInterval.
	if !synced || p.clock.Since(checked) < flushCheckInterval {
		return false
	}
	if p.ipt.Run("-t", "mangle", "-S", chainCanary) != nil {
		return true
	}
	addrs, err := p.links.Addrs(DummyInterface, p.cfg.Family)
	return err == nil && addrs == nil && plan != nil && len(plan.VIPs) > 0
}
