package healthcheck

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/internal/model"
)

// ServiceHealth runs one HTTP server per healthCheckNodePort (type LoadBalancer with
// externalTrafficPolicy Local). Load balancers probe it to learn whether this node has
// a ready local endpoint: 200 when it has and kproxy is healthy, 503 otherwise.
type ServiceHealth struct {
	proxyHealthy func() bool

	mu sync.Mutex
	// addrs are the addresses the running servers listen on ("" is every address).
	addrs    []string
	services map[types.NamespacedName]*serviceServer
}

type serviceServer struct {
	name    types.NamespacedName
	port    int32
	servers []*http.Server
	// serving counts the servers' goroutines; stop waits for them.
	serving sync.WaitGroup
	// local is the number of ready local endpoints, read by the handler.
	mu    sync.Mutex
	local int
}

// NewServiceHealth returns the server set. The servers listen where the node's
// NodePorts answer, as the snapshot of each Sync says (model.NodeParams): the node's
// addresses follow its Node object and its interfaces, and the servers move with them.
func NewServiceHealth(proxyHealthy func() bool) *ServiceHealth {
	return &ServiceHealth{proxyHealthy: proxyHealthy, services: map[types.NamespacedName]*serviceServer{}}
}

// Sync makes the servers match the snapshot: one per Service that needs a health
// check, on the node's current addresses, reporting its count of ready local
// endpoints. It follows endpoint changes at once because it runs after every sync.
func (h *ServiceHealth) Sync(snap *model.Snapshot) {
	want := map[types.NamespacedName]int32{}
	local := map[types.NamespacedName]int{}
	for nn, ports := range snap.PortsByService {
		seen := map[netip.Addr]bool{}
		for _, sp := range ports {
			if sp.HealthCheckNodePort == 0 {
				continue
			}
			want[nn] = sp.HealthCheckNodePort
			for _, ip := range model.LocalReadyEndpoints(snap.Endpoints[sp.Name]) {
				seen[ip] = true
			}
		}
		local[nn] = len(seen)
	}
	var addrs []string
	if len(want) > 0 { // no Service needs one: no need to look at the node
		addrs = listenHosts(snap)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	moved := len(want) > 0 && !slices.Equal(addrs, h.addrs)
	if moved && len(h.services) > 0 {
		klog.InfoS("Health check node ports move to the node's current addresses", "from", h.addrs, "to", addrs)
	}
	for nn, s := range h.services {
		if port, ok := want[nn]; !ok || port != s.port || moved {
			s.stop()
			delete(h.services, nn)
		}
	}
	if moved {
		h.addrs = addrs
	}
	for nn, port := range want {
		s, ok := h.services[nn]
		if !ok {
			s = &serviceServer{name: nn, port: port}
			if err := s.start(h.addrs, h.proxyHealthy); err != nil {
				klog.ErrorS(err, "Cannot serve the health check node port", "service", nn, "port", port)
				continue
			}
			h.services[nn] = s
		}
		s.mu.Lock()
		s.local = local[nn]
		s.mu.Unlock()
	}
}

// listenHosts are the hosts the servers listen on: the node's NodePort addresses of
// both families, sorted so that an unchanged set compares equal; [""] (every address)
// when NodePorts answer on all, or when the snapshot has no node parameters.
func listenHosts(snap *model.Snapshot) []string {
	var out []string
	for _, f := range []model.Family{model.IPv4, model.IPv6} {
		np, ok := snap.NodeParams(f)
		if !ok || np.NodePortAll {
			return []string{""}
		}
		for _, a := range np.NodePortIPs {
			out = append(out, a.String())
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Stop closes every server.
func (h *ServiceHealth) Stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for nn, s := range h.services {
		s.stop()
		delete(h.services, nn)
	}
}

type serviceBody struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints      int  `json:"localEndpoints"`
	ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
}

func (s *serviceServer) ServeHTTP(w http.ResponseWriter, _ *http.Request, proxyHealthy func() bool) {
	s.mu.Lock()
	n := s.local
	s.mu.Unlock()
	var b serviceBody
	b.Service.Namespace, b.Service.Name = s.name.Namespace, s.name.Name
	b.LocalEndpoints = n
	b.ServiceProxyHealthy = proxyHealthy == nil || proxyHealthy()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("X-Load-Balancing-Endpoint-Weight", strconv.Itoa(n))
	if n == 0 || !b.ServiceProxyHealthy {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(b)
}

func (s *serviceServer) start(addrs []string, proxyHealthy func() bool) error {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.ServeHTTP(w, r, proxyHealthy) })
	for _, a := range addrs {
		addr := net.JoinHostPort(a, strconv.Itoa(int(s.port)))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			s.stop()
			return fmt.Errorf("listen on %s: %w", addr, err)
		}
		srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
		s.servers = append(s.servers, srv)
		s.serving.Go(func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				klog.ErrorS(err, "Health check node port server failed", "service", s.name, "address", addr)
			}
		})
	}
	return nil
}

// stop closes the servers and returns once their goroutines have ended.
func (s *serviceServer) stop() {
	for _, srv := range s.servers {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = srv.Shutdown(ctx)
		cancel()
	}
	s.servers = nil
	s.serving.Wait()
}
