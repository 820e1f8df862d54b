package apiserver

import (
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
)

// A slice decoded by appending (as the protobuf and JSON decoders do) is cached in an
// array of its length, with its endpoints unchanged.
func TestSlimRightSizesEndpoints(t *testing.T) {
	slice := &discoveryv1.EndpointSlice{}
	for i := range 10 {
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.0.0." + string(rune('0'+i))}})
	}
	if cap(slice.Endpoints) == len(slice.Endpoints) {
		t.Fatalf("test setup: appending 10 endpoints gave capacity %d", cap(slice.Endpoints))
	}
	out, err := slim(slice)
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*discoveryv1.EndpointSlice).Endpoints
	if len(got) != 10 || cap(got) != 10 {
		t.Errorf("after slim: %d endpoints in an array of %d, want 10 in 10", len(got), cap(got))
	}
	for i := range got {
		if want := "10.0.0." + string(rune('0'+i)); got[i].Addresses[0] != want {
			t.Errorf("endpoint %d: address %s, want %s", i, got[i].Addresses[0], want)
		}
	}
}
