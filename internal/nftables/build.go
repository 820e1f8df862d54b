package nftables

import (
	"cmp"
	"slices"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/knftables"

	"github.com/kproxy/kproxy/internal/model"
)

// chainDeleteDelay is how long an unused (flushed) chain waits before it is deleted.
const chainDeleteDelay = time.Second

// buildInput is everything one sync's transaction depends on.
type buildInput struct {
	params *Params
	snap   *model.Snapshot
	// full rewrites every object; otherwise only the Services in snap.Changed are
	// diffed against prev.
	full bool
	// prev is what the previous successful sync left in the kernel. nil means the
	// kernel's content is unknown (first sync, or after a failure): the sync is full.
	prev *state
	// replaceTable deletes and recreates the table in the transaction, which also
	// clears leftovers of other versions whose objects could clash with ours (see
	// Proxier.write for when).
	replaceTable bool
	// kernel lists the table's objects by type ("chain", "set", "map"), as read before
	// a full sync that keeps the table, to find objects that are no longer used (or
	// that someone else added). nil when the table does not exist or is replaced.
	kernel map[string][]string
	// ruleCounts is the number of rules in each chain of the table, read with kernel:
	// a per-Service chain whose count is not what prev wrote was edited by someone
	// else and is rewritten.
	ruleCounts map[string]int
	now        time.Time
	// elementsApart leaves the elements of a full sync out of the transaction: they are
	// returned as ops, to be written over netlink once the transaction ran. Only for a
	// table that holds no Service rules yet (see Proxier.Sync): in between, the
	// Services are not reachable, which they were not before either.
	elementsApart bool
}

// build fills tx with the sync's operations and returns the state the kernel holds once
// tx has run, and the element adds and deletes of tx as ops, in tx's order: when they
// are all tx holds, they can be written without nft. With in.elementsApart, a full
// sync's elements are only in ops, not in tx. It is pure apart from reusing in.prev,
// which it updates in place: when tx fails, the caller must drop both.
func build(tx *knftables.Transaction, in buildInput) (next *state, ops []elementOp) {
	b := &txBuilder{p: in.params, tx: tx, now: in.now, touched: map[elementID]prior{}, slotWant: map[elementID]element{}}
	if in.full || in.prev == nil {
		b.full(in)
		b.elementsApart = in.elementsApart
	} else {
		b.partial(in)
	}
	b.emit()
	return b.st, b.ops
}

// txBuilder collects the operations in phases, so that the transaction never refers to
// an object before creating it, and never deletes one that is still referenced.
type txBuilder struct {
	p   *Params
	tx  *knftables.Transaction
	st  *state
	now time.Time

	rewrite      []*chain // chains added, flushed, and refilled
	staleFlush   []string // chains no longer used: flushed, deleted later
	setDeletes   []string
	setAdds      []string
	setTimeouts  map[string]time.Duration
	mapAdds      []string // endpoint maps added (and flushed, in a full sync)
	mapDeletes   []string
	chainDeletes []string
	// touched holds the elements whose owners this sync changes, with what the
	// kernel held before the first change (see touch).
	touched map[elementID]prior
	// slotWant holds the endpoint-map elements this sync wants among the touched ones
	// (they have no owners; see portObjects.slots).
	slotWant map[elementID]element
	ops      []elementOp // the element operations, in the order of tx
	// fullElements: every wanted element is (re)added, as the maps were flushed.
	fullElements bool
	// elementsApart: the elements go to ops only, not into tx (see buildInput).
	elementsApart bool
	// fresh: the transaction deletes and recreates the table, so nothing in it needs
	// flushing (at ten thousand Services the flushes cost nft a quarter of its time).
	fresh bool
}

func (b *txBuilder) full(in buildInput) {
	p := in.params
	b.st = newState(p)
	b.fullElements = true
	b.setTimeouts = map[string]time.Duration{}
	table := &knftables.Table{Comment: knftables.PtrTo(tableComment)}
	b.tx.Add(table)
	if in.replaceTable {
		b.tx.Delete(&knftables.Table{})
		b.tx.Add(table)
		b.fresh = true
	} else if in.prev != nil {
		b.st.pendingDelete = in.prev.pendingDelete
	}
	for _, bc := range baseChains {
		b.tx.Add(&knftables.Chain{Name: bc.name, Type: &bc.typ, Hook: &bc.hook, Priority: &bc.priority})
	}
	for i := range containers {
		obj := containers[i].object(p)
		b.tx.Add(obj)
		if !b.fresh {
			b.tx.Flush(obj)
		}
	}
	// With a known prev, a per-service chain the kernel holds with the rules prev
	// recorded (as many as prev wrote, by in.ruleCounts) is left alone: rewriting every chain makes nft (1.0.x) re-add thousands
	// of anonymous maps, which takes a minute at ten thousand Services. Elements and
	// the fixed chains, cheap, are always rewritten.
	kernelChains, kernelMaps := map[string]bool{}, map[string]bool{}
	for _, name := range in.kernel["chain"] {
		kernelChains[name] = true
	}
	for _, name := range in.kernel["map"] {
		kernelMaps[name] = true
	}
	prevChains := map[string]*chain{}
	if in.prev != nil {
		for _, o := range in.prev.ports {
			for _, c := range o.chains {
				prevChains[c.name] = c
			}
		}
	}
	desired, desiredMaps := map[string]bool{}, map[string]bool{}
	for _, c := range fixedChains(p) {
		b.rewrite = append(b.rewrite, c)
		desired[c.name] = true
	}
	for _, name := range sortedPortNames(in.snap.Services) {
		sp := in.snap.Services[name]
		objs := portObjectsFor(p, sp, in.snap.Endpoints[name], in.snap.Node)
		if objs == nil {
			continue
		}
		b.st.ports[name] = objs
		b.st.byService[name.NamespacedName] = append(b.st.byService[name.NamespacedName], name)
		for _, c := range objs.chains {
			if pc := prevChains[c.name]; pc == nil || !kernelChains[c.name] || !sameRules(pc.rules, c.rules) ||
				(in.ruleCounts != nil && in.ruleCounts[c.name] != len(c.rules)) {
				b.rewrite = append(b.rewrite, c)
				if kernelMaps[c.name] && containsString(objs.endpointMaps, c.name) {
					// nft 1.0.6 cannot add a rule that looks up a typeof map the
					// kernel already holds ("conflicting protocols specified: tcp
					// vs. th"): the chain's endpoint map is deleted and re-added in
					// the transaction, after the flush drops the chain's reference.
					b.mapDeletes = append(b.mapDeletes, c.name)
				}
			}
			desired[c.name] = true
			delete(b.st.pendingDelete, c.name)
		}
		for i := range objs.elements {
			el := &objs.elements[i]
			b.st.own(el.id(), objs, el)
		}
		for set, t := range objs.affinity {
			b.setTimeouts[set] = t
		}
		for _, m := range objs.endpointMaps {
			b.mapAdds = append(b.mapAdds, m)
			desiredMaps[m] = true
		}
	}
	b.st.node = &portObjects{name: nodeOwner, elements: nodePortElements(p)}
	for i := range b.st.node.elements {
		el := &b.st.node.elements[i]
		b.st.own(el.id(), b.st.node, el)
	}

	// Affinity sets keep their clients across full syncs, unless their timeout changed
	// (nft cannot change it in place) or they are not known to be ours.
	var known map[string]time.Duration
	if in.prev != nil {
		known = in.prev.affinityTimeouts()
	}
	inKernel := map[string]bool{}
	for _, name := range in.kernel["set"] {
		inKernel[name] = true
	}
	for _, set := range sortedKeys(b.setTimeouts) {
		if t, ok := known[set]; inKernel[set] && (!ok || t != b.setTimeouts[set]) {
			b.setDeletes = append(b.setDeletes, set)
		}
		b.setAdds = append(b.setAdds, set)
	}
	fixed := map[string]bool{}
	for _, c := range containers {
		fixed[c.name] = true
	}
	// Anonymous sets ("__set0", "__map0") belong to rules; netlink lists them.
	for _, name := range in.kernel["set"] {
		if _, ok := b.setTimeouts[name]; !ok && !fixed[name] && !strings.HasPrefix(name, "__") {
			b.setDeletes = append(b.setDeletes, name)
		}
	}
	for _, name := range in.kernel["map"] {
		if !desiredMaps[name] && !fixed[name] && !strings.HasPrefix(name, "__") {
			b.mapDeletes = append(b.mapDeletes, name)
		}
	}
	sort.Strings(b.setDeletes)
	sort.Strings(b.mapDeletes)

	// Chains nobody uses any more (ours, or left by someone else) are flushed now and
	// deleted later.
	for _, name := range in.kernel["chain"] {
		if !desired[name] {
			b.retire(name)
		}
	}
	// Pending chains the kernel no longer holds (the table was flushed) are forgotten.
	chainInKernel := map[string]bool{}
	for _, name := range in.kernel["chain"] {
		chainInKernel[name] = true
	}
	for name := range b.st.pendingDelete {
		if desired[name] || !chainInKernel[name] {
			delete(b.st.pendingDelete, name)
		}
	}
	b.deleteDueChains()
}

func (b *txBuilder) partial(in buildInput) {
	b.st = in.prev
	b.setTimeouts = map[string]time.Duration{}
	changed := make([]types.NamespacedName, 0, len(in.snap.Changed))
	for nn := range in.snap.Changed {
		changed = append(changed, nn)
	}
	sort.Slice(changed, func(i, j int) bool { return changed[i].String() < changed[j].String() })
	for _, nn := range changed {
		var names []model.ServicePortName
		for _, sp := range in.snap.PortsByService[nn] {
			objs := portObjectsFor(b.p, sp, in.snap.Endpoints[sp.Name], in.snap.Node)
			if objs == nil {
				continue
			}
			names = append(names, sp.Name)
			b.diffPort(sp.Name, b.st.ports[sp.Name], objs)
			b.st.ports[sp.Name] = objs
		}
		for _, old := range b.st.byService[nn] {
			if !containsName(names, old) {
				b.diffPort(old, b.st.ports[old], nil)
				delete(b.st.ports, old)
			}
		}
		if len(names) == 0 {
			delete(b.st.byService, nn)
		} else {
			b.st.byService[nn] = names
		}
	}
	// The node's NodePort addresses may change without a Service changing.
	if b.st.node != nil {
		for i := range b.st.node.elements {
			b.st.disown(b.touch(&b.st.node.elements[i]), nodeOwner)
		}
	}
	b.st.node = &portObjects{name: nodeOwner, elements: nodePortElements(b.p)}
	for i := range b.st.node.elements {
		el := &b.st.node.elements[i]
		b.st.own(b.touch(el), b.st.node, el)
	}
	b.deleteDueChains()
}

// diffPort records what changes between the objects a ServicePort had (old, nil if
// none) and has now (cur, nil if none): chains whose rules differ are rewritten, chains
// gone are retired, affinity sets and element ownership follow.
func (b *txBuilder) diffPort(name model.ServicePortName, old, cur *portObjects) {
	if old == nil {
		old = &portObjects{}
	}
	if cur == nil {
		cur = &portObjects{}
	}
	// A set whose timeout changes is deleted and re-added; every chain of the port is
	// rewritten, so that no rule refers to it at the time of the delete.
	recreated := false
	for _, set := range sortedKeys(cur.affinity) {
		t := cur.affinity[set]
		ot, had := old.affinity[set]
		if had && ot != t {
			b.setDeletes = append(b.setDeletes, set)
			recreated = true
		}
		if !had || ot != t {
			b.setAdds = append(b.setAdds, set)
			b.setTimeouts[set] = t
		}
	}
	for _, set := range sortedKeys(old.affinity) {
		if _, ok := cur.affinity[set]; !ok {
			b.setDeletes = append(b.setDeletes, set)
		}
	}
	for _, m := range cur.endpointMaps {
		if !containsString(old.endpointMaps, m) {
			b.mapAdds = append(b.mapAdds, m)
		}
	}
	for _, m := range old.endpointMaps {
		if !containsString(cur.endpointMaps, m) {
			b.mapDeletes = append(b.mapDeletes, m)
		}
	}
	oldChains := old.chainMap()
	for _, c := range cur.chains {
		if oc, ok := oldChains[c.name]; recreated || !ok || !sameRules(oc.rules, c.rules) {
			b.rewrite = append(b.rewrite, c)
		}
		delete(oldChains, c.name)
		delete(b.st.pendingDelete, c.name)
	}
	for _, c := range old.chains {
		if _, gone := oldChains[c.name]; gone {
			b.retire(c.name)
		}
	}
	for i := range old.elements {
		b.st.disown(b.touch(&old.elements[i]), name)
	}
	for i := range cur.elements {
		el := &cur.elements[i]
		b.st.own(b.touch(el), cur, el)
	}
	b.diffSlots(old, cur)
}

// diffSlots records the endpoint-map elements that change between old and cur: those
// of old are held by the kernel, those of cur wanted. A map whose slots are the same
// costs nothing.
func (b *txBuilder) diffSlots(old, cur *portObjects) {
	same := func(m string, slots []slot) bool {
		for i, om := range old.endpointMaps {
			if om == m {
				return slices.Equal(old.slots[i], slots)
			}
		}
		return false
	}
	for i, m := range cur.endpointMaps {
		if same(m, cur.slots[i]) {
			continue
		}
		for _, s := range cur.slots[i] {
			el := s.element(m)
			id := el.id()
			b.slotWant[id] = el
			if _, ok := b.touched[id]; !ok {
				b.touched[id] = prior{}
			}
		}
	}
	for i, m := range old.endpointMaps {
		if k := slices.Index(cur.endpointMaps, m); k >= 0 && slices.Equal(old.slots[i], cur.slots[k]) {
			continue
		}
		for _, s := range old.slots[i] {
			el := s.element(m)
			b.touched[el.id()] = prior{el: el, held: true}
		}
	}
}

// prior is what the kernel held for an element ID before this sync changed its owners.
type prior struct {
	el   element
	held bool
}

// touch returns el's ID, recording on the first touch in this sync what the kernel
// holds for it: the winner among its owners as they were.
func (b *txBuilder) touch(el *element) elementID {
	id := el.id()
	if _, ok := b.touched[id]; !ok {
		have, held := b.st.winner(id)
		b.touched[id] = prior{el: have, held: held}
	}
	return id
}

// retire flushes a chain that is no longer used and schedules its deletion; a chain
// already flushed long enough ago is deleted now.
func (b *txBuilder) retire(name string) {
	if since, ok := b.st.pendingDelete[name]; ok {
		if b.now.Sub(since) >= chainDeleteDelay {
			b.chainDeletes = append(b.chainDeletes, name)
			delete(b.st.pendingDelete, name)
		}
		return
	}
	b.staleFlush = append(b.staleFlush, name)
	b.st.pendingDelete[name] = b.now
}

func (b *txBuilder) deleteDueChains() {
	for _, name := range sortedKeys(b.st.pendingDelete) {
		if b.now.Sub(b.st.pendingDelete[name]) >= chainDeleteDelay && !containsString(b.chainDeletes, name) {
			b.chainDeletes = append(b.chainDeletes, name)
			delete(b.st.pendingDelete, name)
		}
	}
}

// emit writes the collected operations into the transaction, in an order that keeps
// every reference valid: chains exist before rules and elements refer to them, nothing
// refers to a set when it is deleted.
func (b *txBuilder) emit() {
	base := map[string]bool{}
	for _, bc := range baseChains {
		base[bc.name] = true
	}
	for _, c := range b.rewrite {
		if !base[c.name] {
			ch := &knftables.Chain{Name: c.name}
			if c.comment != "" {
				ch.Comment = knftables.PtrTo(c.comment)
			}
			b.tx.Add(ch)
		}
		if !b.fresh {
			b.tx.Flush(&knftables.Chain{Name: c.name})
		}
	}
	for _, name := range b.staleFlush {
		b.tx.Flush(&knftables.Chain{Name: name})
	}

	// Elements: resolve each touched element against what the kernel holds.
	var adds []element
	if b.fullElements {
		// Every wanted element and every port's endpoint-map elements, in ID order.
		n := len(b.st.wanted)
		for _, o := range b.st.ports {
			for _, s := range o.slots {
				n += len(s)
			}
		}
		// Sized up front: at ten thousand Services these hold over 100,000 elements,
		// and growing them by appends would allocate several times that.
		all := make([]idElement, 0, n)
		for id := range b.st.wanted {
			el, _ := b.st.winner(id)
			all = append(all, idElement{id, el})
		}
		for _, o := range b.st.ports {
			for i, m := range o.endpointMaps {
				for _, s := range o.slots[i] {
					el := s.element(m)
					all = append(all, idElement{elementID{m, el.key[0]}, el})
				}
			}
		}
		slices.SortFunc(all, func(a, b idElement) int { return compareIDs(a.id, b.id) })
		// The operations are the elements' only copy from here on (all is garbage).
		b.ops = make([]elementOp, 0, len(all))
		for i := range all {
			b.ops = append(b.ops, elementOp{el: all[i].el})
		}
	} else {
		ids := make([]elementID, 0, len(b.touched))
		for id := range b.touched {
			ids = append(ids, id)
		}
		sortIDs(ids)
		deletedMaps := make(map[string]bool, len(b.mapDeletes))
		for _, m := range b.mapDeletes {
			deletedMaps[m] = true
		}
		for _, id := range ids {
			want, wanted := b.st.winner(id)
			if !wanted {
				want, wanted = b.slotWant[id]
			}
			have, held := b.touched[id].el, b.touched[id].held
			switch {
			case held && wanted && have.sameContent(&want):
				continue
			case held && deletedMaps[id.container]:
				// Its endpoint map is deleted below, elements and all.
			case held:
				b.tx.Delete(have.object())
				b.ops = append(b.ops, elementOp{del: true, el: have})
			}
			if wanted {
				adds = append(adds, want)
			}
		}
	}

	for _, set := range b.setDeletes {
		b.tx.Delete(&knftables.Set{Name: set})
	}
	for _, set := range b.setAdds {
		b.tx.Add(&knftables.Set{
			Name:    set,
			Type:    b.p.addrType(),
			Flags:   []knftables.SetFlag{knftables.DynamicFlag, knftables.TimeoutFlag},
			Timeout: knftables.PtrTo(b.setTimeouts[set]),
		})
	}
	for _, m := range b.mapDeletes {
		b.tx.Delete(&knftables.Map{Name: m})
	}
	for _, m := range b.mapAdds {
		b.tx.Add(endpointMap(b.p, m))
		if b.fullElements && !b.fresh {
			b.tx.Flush(&knftables.Map{Name: m})
		}
	}
	for _, c := range b.rewrite {
		for _, r := range c.rules {
			rl := &knftables.Rule{Chain: c.name, Rule: r.text}
			if r.comment != "" {
				rl.Comment = knftables.PtrTo(r.comment)
			}
			b.tx.Add(rl)
		}
	}
	if b.fullElements && !b.elementsApart {
		for i := range b.ops {
			b.tx.Add(b.ops[i].el.object())
		}
	}
	for i := range adds {
		b.tx.Add(adds[i].object())
		b.ops = append(b.ops, elementOp{el: adds[i]})
	}
	for _, name := range b.chainDeletes {
		b.tx.Delete(&knftables.Chain{Name: name})
	}
}

func sortedPortNames(m map[model.ServicePortName]*model.ServicePort) []model.ServicePortName {
	names := make([]model.ServicePortName, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return ownerLess(names[i], names[j]) })
	return names
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortIDs(ids []elementID) {
	slices.SortFunc(ids, compareIDs)
}

func compareIDs(a, b elementID) int {
	return cmp.Or(cmp.Compare(a.container, b.container), cmp.Compare(a.key, b.key))
}

// idElement is an element with its ID, to sort them without recomputing IDs.
type idElement struct {
	id elementID
	el element
}

func containsName(names []model.ServicePortName, n model.ServicePortName) bool {
	for _, x := range names {
		if x == n {
			return true
		}
	}
	return false
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
