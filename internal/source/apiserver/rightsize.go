package apiserver

import (
	"slices"

	discoveryv1 "k8s.io/api/discovery/v1"
)

// rightSized returns the endpoints in an array of their length. Decoders grow the
// array by appending, so a slice of 10 endpoints sits in an array of 16 (1.5 KiB
// instead of 1 KiB), and the cache keeps it for the object's lifetime.
func rightSized(eps []discoveryv1.Endpoint) []discoveryv1.Endpoint {
	if cap(eps) == len(eps) {
		return eps
	}
	return slices.Clone(eps)
}
