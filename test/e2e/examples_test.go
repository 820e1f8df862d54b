package e2e

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// TestExamplesDecode checks that every document in examples/ is a well-formed object of
// the kinds kproxy reads, and that each Service has an EndpointSlice. It needs no root.
func TestExamplesDecode(t *testing.T) {
	files, err := filepath.Glob("../../examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples found: %v", err)
	}
	services, slices := map[string]bool{}, map[string]bool{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r := utilyaml.NewYAMLReader(bufioReader(data))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			var meta struct{ Kind string }
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			switch meta.Kind {
			case "Service":
				var s v1.Service
				if err := yaml.UnmarshalStrict(doc, &s); err != nil {
					t.Errorf("%s: Service: %v", f, err)
				}
				services[s.Namespace+"/"+s.Name] = true
			case "EndpointSlice":
				var s discoveryv1.EndpointSlice
				if err := yaml.UnmarshalStrict(doc, &s); err != nil {
					t.Errorf("%s: EndpointSlice: %v", f, err)
				}
				slices[s.Namespace+"/"+s.Labels[discoveryv1.LabelServiceName]] = true
			case "Node":
				var n v1.Node
				if err := yaml.UnmarshalStrict(doc, &n); err != nil {
					t.Errorf("%s: Node: %v", f, err)
				}
			default:
				t.Errorf("%s: unexpected kind %q", f, meta.Kind)
			}
		}
	}
	for s := range services {
		if !slices[s] {
			t.Errorf("Service %s has no EndpointSlice in examples/", s)
		}
	}
	if len(services) != 3 {
		t.Errorf("want 3 example Services, got %v", services)
	}
}
