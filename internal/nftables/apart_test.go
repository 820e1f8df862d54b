package nftables

import (
	"context"
	"testing"

	"k8s.io/utils/clock"
	"sigs.k8s.io/knftables"
)

// batchKernel is the fake kernel, recording the element batches written to it.
type batchKernel struct {
	fakeKernel
	batches [][]elementOp
}

func (k *batchKernel) CountRules(context.Context, string) (int, error) { return 0, nil }

func (k *batchKernel) writeElements(ctx context.Context, ops []elementOp) error {
	k.batches = append(k.batches, append([]elementOp(nil), ops...))
	return k.fakeKernel.writeElements(ctx, ops)
}

// A first sync into an empty table writes its elements in batches of at most
// apartChunk operations, every endpoint-map element before any element that leads to
// an endpoint map's chain, and the table ends up as one transaction would leave it.
func TestFirstSyncWritesElementsInBatchesEndpointMapsFirst(t *testing.T) {
	fake := knftables.NewFake(knftables.IPv4Family, TableName)
	k := &batchKernel{fakeKernel: fakeKernel{fake}}
	p := NewProxier(referenceParams(), k, clock.RealClock{}, newMetrics())
	const services = 3000 // 3000 x (cluster-ips, service-ips, 2 endpoint slots) > apartChunk
	w := twoEndpointServices(services, "ns", "svc-", false)
	wr, err := p.write(t.Context(), w.snapshot(), true)
	if err != nil {
		t.Fatalf("first sync: %v", err)
	}
	if wr.via != "nft+netlink" {
		t.Fatalf("first sync via %q, want nft+netlink", wr.via)
	}
	if len(k.batches) < 2 {
		t.Fatalf("%d element batches, want more than one", len(k.batches))
	}
	total, endpointMapElements, seenOther := 0, 0, false
	for i, b := range k.batches {
		if len(b) > apartChunk {
			t.Errorf("batch %d holds %d operations, more than %d", i, len(b), apartChunk)
		}
		for _, op := range b {
			total++
			if isEndpointMap(op.el.container, op.el.isMap) {
				endpointMapElements++
				if seenOther {
					t.Fatalf("endpoint-map element %v of %s after an element of another set or map", op.el.key, op.el.container)
				}
			} else {
				seenOther = true
			}
		}
	}
	params := referenceParams()
	want := 4*services + len(nodePortElements(&params)) // and the node's nodeport-ips
	if endpointMapElements != 2*services || total != want {
		t.Errorf("%d operations of which %d endpoint-map elements; want %d and %d", total, endpointMapElements, want, 2*services)
	}
	elements, err := fake.ListElements(t.Context(), "map", mapServiceIPs)
	if err != nil {
		t.Fatal(err)
	}
	if len(elements) != services {
		t.Errorf("service-ips holds %d elements, want %d", len(elements), services)
	}
}
