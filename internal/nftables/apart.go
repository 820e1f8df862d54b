package nftables

import (
	"context"
	"fmt"
	"strings"
)

// apartChunk is the number of element operations per netlink batch when a first sync
// writes its elements apart from the transaction that created the table (see
// Proxier.write). One batch for all of them holds 120,000 elements at ten thousand
// Services x 10, and encoding it keeps every element three more times in memory at
// once (google/nftables' elements, their attributes, the marshalled messages): tens
// of MiB live on top of the state, which the garbage collector's target then
// doubles. In batches of this size the transient is a few hundred KiB.
const apartChunk = 8192

// writeApart writes a fresh table's elements in batches of apartChunk operations. The
// table holds no Service's elements yet, so nothing needs them in one transaction; but
// a Service whose address is in service-ips while its endpoint map is still empty
// would let its first packets through without DNAT (and conntrack would remember
// them so), so endpoint-map elements go first and the addresses that lead to them
// after.
func writeApart(ctx context.Context, k Kernel, ops []elementOp) error {
	ordered := make([]elementOp, 0, len(ops))
	for _, op := range ops {
		if isEndpointMap(op.el.container, op.el.isMap) {
			ordered = append(ordered, op)
		}
	}
	for _, op := range ops {
		if !isEndpointMap(op.el.container, op.el.isMap) {
			ordered = append(ordered, op)
		}
	}
	for start := 0; start < len(ordered); start += apartChunk {
		end := min(start+apartChunk, len(ordered))
		if err := k.writeElements(ctx, ordered[start:end]); err != nil {
			return fmt.Errorf("elements %d to %d of %d: %w", start, end, len(ordered), err)
		}
	}
	return nil
}

// isEndpointMap reports whether a container is a dispatch chain's endpoint map (see
// endpointDispatch): a map named as its service- or local- chain.
func isEndpointMap(container string, isMap bool) bool {
	switch container {
	case mapServiceIPs, mapServiceNodePorts:
		return false
	}
	return isMap && (strings.HasPrefix(container, prefixService) || strings.HasPrefix(container, prefixLocal))
}
