package manifests

import (
	"os"
	"path/filepath"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
)

// FuzzParseAndValidate feeds arbitrary file content to the manifest decoder and to the
// validator of every object it yields: hostile input must give errors, never a panic.
// The seeds are the repository's examples.
func FuzzParseAndValidate(f *testing.F) {
	examples, err := filepath.Glob("../../../examples/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, path := range examples {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: x}\n"))
	f.Add([]byte("---\n---\n# only comments\n"))
	f.Fuzz(func(_ *testing.T, data []byte) {
		objs, err := parseFile("fuzz.yaml", data)
		if err != nil {
			return
		}
		for _, o := range objs {
			if o.err != nil {
				continue
			}
			switch obj := o.obj.(type) {
			case *v1.Service:
				_ = validateService(obj)
			case *discovery.EndpointSlice:
				defaultEndpointSlice(obj)
				_ = validateEndpointSlice(obj)
			case *v1.Node:
				_ = validateNode(obj)
			}
		}
	})
}
