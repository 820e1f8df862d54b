package memory

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	krt "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/clock"

	"github.com/kproxy/kproxy/internal/iptables"
	kmetrics "github.com/kproxy/kproxy/internal/metrics"
	"github.com/kproxy/kproxy/internal/model"
	"github.com/kproxy/kproxy/internal/nftables"
	"github.com/kproxy/kproxy/internal/source/apiserver"
)

// Phase is the memory of one phase of a cold start.
type Phase struct {
	Name string
	// Live is the heap live at the end of the phase (after a full collection).
	Live int64
	// PeakHeap is the largest heap (objects allocated and not yet swept, live or
	// not) sampled during the phase: what the garbage collector let the heap grow to.
	PeakHeap int64
	// PeakMapped is the largest memory the Go runtime had mapped and not returned
	// to the OS, sampled during the phase: what RSS follows.
	PeakMapped int64
	// Allocated is what the phase allocated in all.
	Allocated int64
}

// Peak is the memory of a cold start, phase by phase, in one mode.
type Peak struct {
	Mode                string
	Services, Endpoints int
	Phases              []Phase
	// TxBytes is the size of the largest transaction text (nft's or iptables-restore's
	// input); NetlinkBytes that of the largest netlink batch.
	TxBytes, NetlinkBytes int64
	// PeakRSS is the process's VmHWM (meaningful in a process that did nothing else).
	PeakRSS int64
}

// MeasurePeak runs a cold start of kproxy in mode ("iptables" or "nftables") without a
// kernel: the real informers (on a fake clientset whose lists hand out n Services with
// m endpoints each, shaped as the API server returns them) with kproxy's transform and
// handlers feed the Tracker; then one full sync runs through the real backend, whose
// output goes to a sink (iptables: the restore input is built and dropped; nftables: the
// transaction is rendered to nft's text and the elements encoded into the netlink
// batch, see nftables.NewSinkKernel). It samples the heap throughout.
//
// With profileDir set, a heap profile is written there at the end of each phase
// (<mode>-<phase number>.pb.gz; compare them with go tool pprof -base), and the
// sampling rate of the profiler is raised so that small allocations show.
func MeasurePeak(mode string, n, m int, profileDir string) (p Peak, err error) {
	p = Peak{Mode: mode, Services: n, Endpoints: m}
	s := newSampler()
	s.profiles = profileDir
	s.mode = mode
	if profileDir != "" {
		runtime.MemProfileRate = 4096
	}
	defer s.stop()

	client := fake.NewClientset()
	serveLists(client, n, m)
	tracker := model.NewTracker("node1", nil, nil)
	src, err := apiserver.NewWithClient(apiserver.Options{NodeName: "node1", ResyncPeriod: 15 * time.Minute}, client, "fake", tracker)
	if err != nil {
		return p, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	defer func() {
		cancel()
		if runErr := <-done; runErr != nil && err == nil {
			err = fmt.Errorf("memory: API source: %w", runErr)
		}
	}()
	s.phase()
	deadline := time.Now().Add(10 * time.Minute)
	for !tracker.Synced() {
		if time.Now().After(deadline) {
			return p, errors.New("memory: the informers did not sync within 10 minutes")
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.Phases = append(p.Phases, s.phase())
	p.Phases[0].Name = "informers: initial lists decoded, transformed, cached, handed to the tracker"

	snap := tracker.Snapshot()
	p.Phases = append(p.Phases, s.phase())
	p.Phases[1].Name = "model: first snapshot (ServicePorts and endpoints)"

	mset, err := kmetrics.New(prometheus.NewRegistry())
	if err != nil {
		return p, fmt.Errorf("memory: %w", err)
	}
	var keep any
	switch mode {
	case "iptables":
		r := &sinkRunner{}
		px := iptables.NewProxier(iptables.Params{Family: model.IPv4, MasqueradeBit: 14, NodePortAll: true,
			LocalDetector: iptables.DetectByCIDR(netip.MustParsePrefix("10.244.0.0/16"))}, r,
			func(string, string) error { return nil }, mset)
		err = px.Sync(ctx, snap, true)
		p.TxBytes = r.largest
		keep = px
	case "nftables":
		var txBytes, nlBytes atomic.Int64
		largest := func(a *atomic.Int64) func(int) {
			return func(n int) {
				if int64(n) > a.Load() {
					a.Store(int64(n))
				}
			}
		}
		px := nftables.NewProxier(nftables.Params{Family: model.IPv4, MasqueradeBit: 14, NodePortAll: true,
			LocalDetector: nftables.DetectByCIDR(netip.MustParsePrefix("10.244.0.0/16"))},
			nftables.NewSinkKernel(model.IPv4, largest(&txBytes), largest(&nlBytes)), clock.RealClock{}, mset)
		err = px.Sync(ctx, snap, true)
		p.TxBytes, p.NetlinkBytes = txBytes.Load(), nlBytes.Load()
		keep = px
	default:
		return p, fmt.Errorf("memory: unknown mode %q", mode)
	}
	if err != nil {
		return p, fmt.Errorf("memory: %s full sync: %w", mode, err)
	}
	p.Phases = append(p.Phases, s.phase())
	p.Phases[2].Name = mode + ": first full sync"
	runtime.KeepAlive(keep)
	runtime.KeepAlive(snap)
	p.PeakRSS = procStatus("VmHWM")
	return p, nil
}

// serveLists makes the fake clientset list n Services and their EndpointSlices (made
// afresh at each list, as a decoder would, and not kept by the fake) and node1, and
// watch nothing.
func serveLists(client *fake.Clientset, n, m int) {
	client.PrependReactor("list", "services", func(k8stesting.Action) (bool, krt.Object, error) {
		l := &v1.ServiceList{ListMeta: metav1.ListMeta{ResourceVersion: "1"}, Items: make([]v1.Service, n)}
		for i := range n {
			svc, _ := apiObjects(i, 0)
			l.Items[i] = *svc
		}
		return true, l, nil
	})
	client.PrependReactor("list", "endpointslices", func(k8stesting.Action) (bool, krt.Object, error) {
		l := &discovery.EndpointSliceList{ListMeta: metav1.ListMeta{ResourceVersion: "1"}, Items: make([]discovery.EndpointSlice, n)}
		for i := range n {
			_, slice := apiObjects(i, m)
			l.Items[i] = *slice
		}
		return true, l, nil
	})
	client.PrependReactor("list", "nodes", func(k8stesting.Action) (bool, krt.Object, error) {
		node := v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1", ResourceVersion: "1"},
			Status: v1.NodeStatus{Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "192.168.0.1"}}}}
		return true, &v1.NodeList{ListMeta: metav1.ListMeta{ResourceVersion: "1"}, Items: []v1.Node{node}}, nil
	})
	client.PrependWatchReactor("*", func(k8stesting.Action) (bool, watch.Interface, error) {
		return true, watch.NewRaceFreeFake(), nil
	})

}

// sinkRunner is an iptables Runner whose tables are empty and whose restores are
// dropped, remembering the largest input.
type sinkRunner struct {
	mu      sync.Mutex
	largest int64
}

func (r *sinkRunner) Restore(data []byte) error {
	return r.RestoreInput(iptables.Input{data})
}

// RestoreInput reads the input through, as the pipe to iptables-restore does.
func (r *sinkRunner) RestoreInput(in iptables.Input) error {
	n, err := io.Copy(io.Discard, in.Reader())
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.largest = max(r.largest, n)
	return nil
}

func (*sinkRunner) Save(string) ([]byte, error)              { return nil, nil }
func (*sinkRunner) Run(...string) error                      { return nil }
func (*sinkRunner) SaveSkeleton(string) ([]byte, error)      { return nil, nil }
func (*sinkRunner) ChainsFlushed([]iptables.ChainProbe) bool { return false }

// sampler records the heap's and the runtime's peaks every millisecond.
type sampler struct {
	mu                sync.Mutex
	profiles, mode    string
	phases            int
	peakHeap, peakMap int64
	allocStart        int64
	quit              chan struct{}
	wg                sync.WaitGroup
}

var sampled = []string{
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/total:bytes",
	"/memory/classes/heap/released:bytes",
	"/gc/heap/allocs:bytes",
}

func newSampler() *sampler {
	s := &sampler{quit: make(chan struct{})}
	s.allocStart = readMetrics()[3]
	s.wg.Go(func() {
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.quit:
				return
			case <-t.C:
				s.sample()
			}
		}
	})
	return s
}

func readMetrics() [4]int64 {
	samples := make([]metrics.Sample, len(sampled))
	for i, name := range sampled {
		samples[i].Name = name
	}
	metrics.Read(samples)
	var out [4]int64
	for i := range samples {
		out[i] = int64(samples[i].Value.Uint64())
	}
	return out
}

func (s *sampler) sample() {
	v := readMetrics()
	s.mu.Lock()
	s.peakHeap = max(s.peakHeap, v[0])
	s.peakMap = max(s.peakMap, v[1]-v[2])
	s.mu.Unlock()
}

// phase ends a phase: it returns its peaks and allocation, then the live heap after a
// full collection, and starts the next.
func (s *sampler) phase() Phase {
	s.sample()
	v := readMetrics()
	s.mu.Lock()
	ph := Phase{PeakHeap: s.peakHeap, PeakMapped: s.peakMap, Allocated: v[3] - s.allocStart}
	s.mu.Unlock()
	ph.Live = heap()
	if s.profiles != "" {
		if err := writeHeapProfile(filepath.Join(s.profiles, fmt.Sprintf("%s-%d.pb.gz", s.mode, s.phases))); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	s.phases++
	v = readMetrics()
	s.mu.Lock()
	s.peakHeap, s.peakMap, s.allocStart = v[0], v[1]-v[2], v[3]
	s.mu.Unlock()
	return ph
}

func (s *sampler) stop() {
	close(s.quit)
	s.wg.Wait()
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("memory: heap profile: %w", err)
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		_ = f.Close() // the write's error is the one to report
		return fmt.Errorf("memory: heap profile %s: %w", path, err)
	}
	return f.Close()
}

// procStatus reads a "kB" field of /proc/self/status, in bytes (0 if unknown).
func procStatus(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err == nil {
				return kb << 10
			}
		}
	}
	return 0
}
