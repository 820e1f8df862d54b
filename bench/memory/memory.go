// Package memory measures what kproxy keeps in memory per Service and per endpoint
// (issue 7: "memory per Service and per endpoint is small (measure it)"): the heap
// retained by the model (with the API objects it holds, as the informer cache does),
// by the iptables ruleset builder's cached fragments and by the nftables backend's
// state, each after a full sync of N Services with M endpoints. No kernel and no
// root are needed: the iptables restore input is computed and dropped, and the
// nftables transaction is rendered to nft's text and its elements encoded into
// netlink messages, as in production, and dropped (nftables.NewSinkKernel).
package memory

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/clock"

	"github.com/kproxy/kproxy/internal/iptables"
	"github.com/kproxy/kproxy/internal/metrics"
	"github.com/kproxy/kproxy/internal/model"
	"github.com/kproxy/kproxy/internal/nftables"
)

// Result is the heap retained by each part after a full sync, in bytes.
type Result struct {
	Services, Endpoints int // N and M
	// Model is the tracker: the Service and EndpointSlice objects and the computed
	// ServicePorts and endpoints.
	Model int64
	// IPTables is the iptables Builder's cached fragments and indexes.
	IPTables int64
	// RestoreInput is the size of one full iptables-restore input: built and
	// written at each full sync, then dropped.
	RestoreInput int64
	// NFTables is the nftables backend's record of what the kernel holds.
	NFTables int64
	// NFTablesSyncAlloc is what one full nftables sync allocates in all (the
	// transaction, its text, the netlink batch and their garbage).
	NFTablesSyncAlloc int64
}

// Measure syncs n Services with m endpoints each and reports the retained heap.
func Measure(n, m int) (Result, error) {
	r := Result{Services: n, Endpoints: m}
	base := heap()

	tracker := model.NewTracker("node1", nil, nil)
	tracker.OnNodeUpsert(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1"},
		Status: v1.NodeStatus{Addresses: []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: "192.168.0.1"}}}})
	for i := 0; i < n; i++ {
		svc, slice := objects(i, m)
		tracker.OnServiceUpsert(svc)
		tracker.OnEndpointSliceUpsert(slice)
	}
	tracker.OnSynced()
	snap := tracker.Snapshot()
	afterModel := heap()
	r.Model = afterModel - base

	ipt := iptables.NewBuilder()
	rs := ipt.Build(iptables.BuildInput{Params: iptables.Params{
		Family: model.IPv4, MasqueradeBit: 14, NodePortAll: true,
		LocalDetector: iptables.DetectByCIDR(netip.MustParsePrefix("10.244.0.0/16")),
	}, Snapshot: snap, Full: true})
	r.RestoreInput = int64(rs.Input.Len())
	rs = nil
	afterIPT := heap()
	r.IPTables = afterIPT - afterModel

	mset, err := metrics.New(prometheus.NewRegistry())
	if err != nil {
		return r, fmt.Errorf("memory: %w", err)
	}
	px := nftables.NewProxier(nftables.Params{Family: model.IPv4, MasqueradeBit: 14, NodePortAll: true,
		LocalDetector: nftables.DetectByCIDR(netip.MustParsePrefix("10.244.0.0/16"))}, nftables.NewSinkKernel(model.IPv4, nil, nil), clock.RealClock{}, mset)
	allocBefore := totalAlloc()
	if err := px.Sync(context.Background(), snap, true); err != nil {
		return r, fmt.Errorf("memory: nftables sync: %w", err)
	}
	r.NFTablesSyncAlloc = totalAlloc() - allocBefore
	r.NFTables = heap() - afterIPT

	// Keep everything measured alive until here.
	runtime.KeepAlive(tracker)
	runtime.KeepAlive(ipt)
	runtime.KeepAlive(px)
	runtime.KeepAlive(snap)
	return r, nil
}

// totalAlloc is the bytes allocated so far.
func totalAlloc() int64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.TotalAlloc)
}

// heap is the live heap after a full collection.
func heap() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// objects returns Service i and its EndpointSlice with m ready endpoints on another
// node, shaped like the scale benchmark's.
func objects(i, m int) (*v1.Service, *discovery.EndpointSlice) {
	name := fmt.Sprintf("svc-%05d", i)
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "bench"},
		Spec: v1.ServiceSpec{
			Type:       v1.ServiceTypeClusterIP,
			ClusterIP:  nth(netip.MustParseAddr("10.96.0.10"), i).String(),
			ClusterIPs: []string{nth(netip.MustParseAddr("10.96.0.10"), i).String()},
			Ports:      []v1.ServicePort{{Name: "http", Protocol: v1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(80)}},
		},
	}
	ready := true
	node := "node2"
	port, proto, portName := int32(80), v1.ProtocolTCP, "http"
	slice := &discovery.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name + "-abcde", Namespace: "bench", Labels: map[string]string{discovery.LabelServiceName: name}},
		AddressType: discovery.AddressTypeIPv4,
		Ports:       []discovery.EndpointPort{{Name: &portName, Protocol: &proto, Port: &port}},
	}
	for e := 0; e < m; e++ {
		slice.Endpoints = append(slice.Endpoints, discovery.Endpoint{
			Addresses:  []string{nth(netip.MustParseAddr("10.128.0.1"), i*m+e).String()},
			Conditions: discovery.EndpointConditions{Ready: &ready},
			NodeName:   &node,
		})
	}
	return svc, slice
}

func nth(a netip.Addr, k int) netip.Addr {
	b := a.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(k)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
