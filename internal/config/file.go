package config

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"

	"k8s.io/kube-proxy/config/v1alpha1"
	"sigs.k8s.io/yaml"
)

// loadConfigFile reads a KubeProxyConfiguration (YAML or JSON) from path.
// Unknown fields are not an error, only a warning each: a ConfigMap written
// for a newer kube-proxy may carry fields this version does not know, and
// upstream itself falls back to lenient decoding for v1alpha1.
func loadConfigFile(path string) (v1alpha1.KubeProxyConfiguration, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return v1alpha1.KubeProxyConfiguration{}, nil, fmt.Errorf("config file: %w", err)
	}
	kp, unknown, err := decodeConfig(data)
	if err != nil {
		return kp, nil, fmt.Errorf("config file %s: %w", path, err)
	}
	var warnings []string
	for _, f := range unknown {
		warnings = append(warnings, fmt.Sprintf("config file %s: unknown field %q ignored", path, f))
	}
	return kp, warnings, nil
}

// decodeConfig decodes data and returns the dotted paths of fields that the
// v1alpha1 type does not have.
func decodeConfig(data []byte) (v1alpha1.KubeProxyConfiguration, []string, error) {
	var kp v1alpha1.KubeProxyConfiguration
	var raw any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return kp, nil, fmt.Errorf("not valid YAML: %w", err)
	}
	top, ok := raw.(map[string]any)
	if !ok {
		return kp, nil, fmt.Errorf("want a KubeProxyConfiguration object, got %s", describeJSON(raw))
	}
	if v, _ := top["apiVersion"].(string); v != apiVersionKubeProxy {
		return kp, nil, fmt.Errorf("apiVersion is %q, want %q", fmt.Sprint(top["apiVersion"]), apiVersionKubeProxy)
	}
	if k, _ := top["kind"].(string); k != kindKubeProxyConfig {
		return kp, nil, fmt.Errorf("kind is %q, want %q", fmt.Sprint(top["kind"]), kindKubeProxyConfig)
	}
	if err := yaml.Unmarshal(data, &kp); err != nil {
		return kp, nil, err
	}
	var unknown []string
	findUnknownFields(top, reflect.TypeOf(kp), "", &unknown)
	sort.Strings(unknown)
	return kp, unknown, nil
}

// findUnknownFields walks the decoded document next to the Go type it was
// decoded into and records every object key the type has no field for.
// It stops at types that decode themselves (durations, quantities) and at maps.
func findUnknownFields(v any, t reflect.Type, path string, out *[]string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			return
		}
		fields := jsonFields(t)
		for key, val := range obj {
			ft, known := fields[strings.ToLower(key)]
			if !known {
				*out = append(*out, joinPath(path, key))
				continue
			}
			findUnknownFields(val, ft, joinPath(path, key), out)
		}
	case reflect.Slice, reflect.Array:
		list, ok := v.([]any)
		if !ok {
			return
		}
		for i, item := range list {
			findUnknownFields(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), out)
		}
	}
}

var jsonUnmarshaler = reflect.TypeOf((*json.Unmarshaler)(nil)).Elem()

// jsonFields maps the lowercased JSON names of t's fields, including those
// promoted from embedded structs without a name of their own (metav1.TypeMeta),
// to their types. Keys are lowercased because encoding/json matches names
// case-insensitively.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	fields := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if f.Anonymous && name == "" {
			for k, v := range jsonFields(f.Type) {
				fields[k] = v
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[strings.ToLower(name)] = f.Type
	}
	return fields
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func describeJSON(v any) string {
	switch v.(type) {
	case nil:
		return "an empty document"
	case []any:
		return "a list"
	default:
		return fmt.Sprintf("a %T", v)
	}
}
