package manifests

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/klog/v2"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Kinds this source understands.
const (
	kindService       = "Service"
	kindEndpointSlice = "EndpointSlice"
	kindNode          = "Node"
)

// objKey identifies an object; Nodes have no namespace.
type objKey struct {
	kind, namespace, name string
}

// String is the "service default/web" form errors use.
func (k objKey) String() string {
	if k.namespace == "" {
		return strings.ToLower(k.kind) + " " + k.name
	}
	return strings.ToLower(k.kind) + " " + k.namespace + "/" + k.name
}

// location is where in the manifests directory an object was read.
type location struct {
	file string
	doc  int // 1-based document index in the file
	line int // line the document starts on
	item int // 1-based index in a List, 0 outside one
}

func (l location) String() string {
	s := fmt.Sprintf("%s document %d (line %d)", l.file, l.doc, l.line)
	if l.item > 0 {
		s += fmt.Sprintf(" item %d", l.item)
	}
	return s
}

// parsedObject is one object of a file, as written (before defaulting).
type parsedObject struct {
	key objKey
	loc location
	obj runtime.Object // *v1.Service, *discovery.EndpointSlice or *v1.Node
	// err is a problem with this object alone (an unknown field, a missing name); the
	// object is then rejected but the rest of its file is used.
	err error
}

// document is one YAML document of a file.
type document struct {
	data []byte
	line int
}

// splitDocuments splits a multi-document YAML (or JSON) file on its "---" lines,
// remembering the line each document starts on for error messages.
func splitDocuments(data []byte) []document {
	var docs []document
	cur := document{line: 1}
	lineNo := 0
	for len(data) > 0 {
		lineNo++
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i+1], data[i+1:]
		} else {
			data = nil
		}
		trimmed := bytes.TrimRight(line, " \t\r\n")
		if bytes.Equal(trimmed, []byte("---")) || bytes.HasPrefix(line, []byte("--- ")) || bytes.HasPrefix(line, []byte("---\t")) {
			docs = append(docs, cur)
			cur = document{line: lineNo + 1}
			continue
		}
		cur.data = append(cur.data, line...)
	}
	return append(docs, cur)
}

// parseFile decodes every object of one file. An error means the file as a whole could
// not be read (bad YAML, a document that is not an object); problems with a single
// object are recorded in that object's err instead.
func parseFile(path string, data []byte) ([]parsedObject, error) {
	var out []parsedObject
	for i, doc := range splitDocuments(data) {
		loc := location{file: path, doc: i + 1, line: doc.line}
		js, err := yaml.YAMLToJSON(doc.data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", loc, err)
		}
		if t := bytes.TrimSpace(js); len(t) == 0 || bytes.Equal(t, []byte("null")) {
			continue // an empty document, or only comments
		}
		objs, err := decodeObject(js, loc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", loc, err)
		}
		out = append(out, objs...)
	}
	return out, nil
}

// header holds the fields every object and List has.
type header struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Items      []json.RawMessage `json:"items"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

func decodeObject(js []byte, loc location) ([]parsedObject, error) {
	var h header
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(js, &h); err != nil {
		return nil, fmt.Errorf("not a Kubernetes object: %w", err)
	}
	if h.Kind == "" || h.APIVersion == "" {
		return nil, errors.New("not a Kubernetes object: apiVersion and kind are required")
	}
	if strings.HasSuffix(h.Kind, "List") && loc.item == 0 {
		var out []parsedObject
		for i, item := range h.Items {
			iloc := loc
			iloc.item = i + 1
			objs, err := decodeObject(item, iloc)
			if err != nil {
				return nil, fmt.Errorf("items[%d]: %w", i, err)
			}
			out = append(out, objs...)
		}
		return out, nil
	}
	var obj runtime.Object
	gvk := h.APIVersion + " " + h.Kind
	switch gvk {
	case "v1 " + kindService:
		obj = &v1.Service{}
	case discovery.SchemeGroupVersion.String() + " " + kindEndpointSlice:
		obj = &discovery.EndpointSlice{}
	case "v1 " + kindNode:
		obj = &v1.Node{}
	default:
		klog.V(2).InfoS("Skipping an object of a kind kproxy does not use", "location", loc.String(), "apiVersion", h.APIVersion, "kind", h.Kind, "name", h.Metadata.Name)
		return nil, nil
	}
	p := parsedObject{key: objKey{kind: h.Kind, namespace: h.Metadata.Namespace, name: h.Metadata.Name}, loc: loc, obj: obj}
	if h.Kind == kindNode {
		p.key.namespace = ""
	} else if p.key.namespace == "" {
		p.key.namespace = v1.NamespaceDefault
	}
	strict, err := sigsjson.UnmarshalStrict(js, obj, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	switch {
	case err != nil:
		p.err = err
	case len(strict) > 0:
		p.err = joinErrors(strict)
	case p.key.name == "":
		p.err = fmt.Errorf("%s without metadata.name", h.Kind)
	}
	return []parsedObject{p}, nil
}

// eligibleFile reports whether a directory entry name is a manifest: YAML or JSON, not
// hidden, not an editor's backup or swap file.
func eligibleFile(name string) bool {
	if strings.HasPrefix(name, ".") || strings.HasPrefix(name, "#") || strings.HasSuffix(name, "~") {
		return false
	}
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}
