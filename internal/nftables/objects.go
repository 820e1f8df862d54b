package nftables

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/knftables"

	"github.com/kproxy/kproxy/internal/model"
)

// rule is one rule of a chain, with its optional comment.
type rule struct {
	text, comment string
}

// chain is a regular chain and the rules it holds, in order.
type chain struct {
	name    string
	comment string
	rules   []rule
}

func (c *chain) add(comment string, parts ...string) {
	c.rules = append(c.rules, rule{text: strings.Join(parts, " "), comment: comment})
}

func sameRules(a, b []rule) bool { return slices.Equal(a, b) }

// element is one element of a set (value empty) or map.
type element struct {
	container string // the set or map
	isMap     bool
	key       []string
	value     string
	comment   string
}

// elementID names an element: elements with the same ID are the same kernel object.
type elementID struct {
	container, key string
}

func (e *element) id() elementID {
	return elementID{container: e.container, key: strings.Join(e.key, " . ")}
}

// sameContent reports whether two elements with the same ID carry the same value: if
// not, the kernel's must be deleted and re-added (nft refuses to overwrite a value).
func (e *element) sameContent(o *element) bool { return e.value == o.value && e.comment == o.comment }

func (e *element) object() *knftables.Element {
	el := &knftables.Element{Key: e.key}
	if e.isMap {
		el.Map = e.container
		el.Value = []string{e.value}
	} else {
		el.Set = e.container
	}
	if e.comment != "" {
		c := truncComment(e.comment)
		el.Comment = &c
	}
	return el
}

// truncComment cuts a comment to the longest nft accepts.
func truncComment(c string) string {
	if len(c) > knftables.CommentLengthMax {
		return c[:knftables.CommentLengthMax]
	}
	return c
}

// portObjects is everything one ServicePort puts into the kernel, as computed from the
// snapshot; the Proxier keeps the last applied one per ServicePort to diff against.
type portObjects struct {
	// name is the ServicePort (nodeOwner for the node's elements).
	name   model.ServicePortName
	chains []*chain
	// affinity holds the ClientIP affinity sets, by name, with their timeout.
	affinity map[string]time.Duration
	// endpointMaps names the endpoint maps of the dispatch chains (named as the chains)
	// and slots holds each one's elements, in the same order. An endpoint map is its
	// port's alone, so its elements need no owners and are kept as slots (40 bytes an
	// endpoint), not as elements (about 250 bytes with their strings and owners).
	endpointMaps []string
	slots        [][]slot
	// elements are the elements of the shared sets and maps.
	elements []element
	// noLocalInternal and noLocalExternal say a Local policy of the port finds no
	// local endpoint (for sync_proxy_rules_no_local_endpoints_total).
	noLocalInternal, noLocalExternal bool
}

// slot is one endpoint's share of a dispatch chain's endpoint map: numgen values lo
// to hi lead to ep (see endpointDispatch).
type slot struct {
	lo, hi uint16
	ep     netip.AddrPort
}

// element is the slot as an element of map m.
func (s slot) element(m string) element {
	key := itoa(int(s.lo))
	if s.hi > s.lo {
		key += "-" + itoa(int(s.hi))
	}
	return element{container: m, isMap: true, key: []string{key}, value: s.ep.Addr().String() + " . " + itoa(int(s.ep.Port()))}
}

func (o *portObjects) chainMap() map[string]*chain {
	m := make(map[string]*chain, len(o.chains))
	for _, c := range o.chains {
		m[c.name] = c
	}
	return m
}
