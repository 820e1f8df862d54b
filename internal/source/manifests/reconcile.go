package manifests

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/internal/allocator"
)

// Labels that hide objects from kube-proxy's informers; the API-server source filters
// on them, so this source does too.
const (
	labelServiceProxyName = "service.kubernetes.io/service-proxy-name"
	labelHeadless         = "service.kubernetes.io/headless"
)

// problem is one current error, with an id that stays the same while it persists so
// that it is logged once.
type problem struct {
	id  string
	err error
}

// reconciliation is the work of one reconcile pass.
type reconciliation struct {
	problems []problem
	desired  map[objKey]runtime.Object
	rejected map[objKey]bool
	winner   map[objKey]string // the file each key's object is taken from
}

func (r *reconciliation) reject(p *parsedObject, err error) {
	r.rejected[p.key] = true
	r.problems = append(r.problems, problem{
		id:  "object " + p.key.String(),
		err: fmt.Errorf("%s: %w (%s)", p.key, err, p.loc),
	})
}

// plannedService is a Service waiting for its allocation.
type plannedService struct {
	obj  *parsedObject
	plan *servicePlan
}

// reconcile works out what the files define now and tells the handler what changed.
// It returns true when allocations could not be saved, so that a pass soon retries.
func (s *Source) reconcile() (saveFailed bool) {
	r := &reconciliation{desired: map[objKey]runtime.Object{}, rejected: map[objKey]bool{}, winner: map[objKey]string{}}
	names := slices.Sorted(maps.Keys(s.files))

	// Every object, in file and document order; a file that does not parse keeps its
	// old objects. gc stays true only if every file has been read whole at least once,
	// so a restart with a broken file does not free its Services' addresses.
	gc := true
	byKey := map[objKey][]*parsedObject{}
	var order []objKey
	for _, name := range names {
		f := s.files[name]
		if f.parseErr != nil {
			r.problems = append(r.problems, problem{id: "file " + name, err: f.parseErr})
			gc = gc && f.parsed
		}
		for i := range f.objects {
			p := &f.objects[i]
			if p.key.name == "" {
				r.problems = append(r.problems, problem{id: "object at " + p.loc.String(), err: fmt.Errorf("%s: %w", p.loc, p.err)})
				continue
			}
			if p.key.kind == kindNode && p.key.name != s.opts.NodeName {
				continue
			}
			if _, ok := byKey[p.key]; !ok {
				order = append(order, p.key)
			}
			byKey[p.key] = append(byKey[p.key], p)
		}
	}

	// One object per key: the file that delivered it before keeps it, else the first.
	var services []plannedService
	serviceOwners := map[string]bool{}
	for _, key := range order {
		list := byKey[key]
		win := list[0]
		for _, p := range list {
			if p.loc.file == s.from[key] {
				win = p
				break
			}
		}
		r.winner[key] = win.loc.file
		for _, p := range list {
			if p != win {
				r.problems = append(r.problems, problem{
					id:  "duplicate " + key.String() + " " + p.loc.String(),
					err: fmt.Errorf("%s: also defined at %s, which is the one used; this copy at %s is ignored", key, win.loc, p.loc),
				})
			}
		}
		if key.kind == kindService {
			serviceOwners[owner(key)] = true
		}
		if win.err != nil {
			r.reject(win, win.err)
			continue
		}
		switch o := win.obj.(type) {
		case *v1.Service:
			svc := o.DeepCopy()
			svc.Namespace = key.namespace
			plan, err := planService(svc, s.alloc.Families())
			if err != nil {
				r.reject(win, err)
				continue
			}
			services = append(services, plannedService{win, plan})
		case *discovery.EndpointSlice:
			es := o.DeepCopy()
			es.Namespace = key.namespace
			defaultEndpointSlice(es)
			if err := validateEndpointSlice(es); err != nil {
				r.reject(win, err)
				continue
			}
			r.desired[key] = es
		case *v1.Node:
			n := o.DeepCopy()
			n.Namespace = ""
			if err := validateNode(n); err != nil {
				r.reject(win, err)
				continue
			}
			r.desired[key] = n
		}
	}
	saveFailed = s.allocate(r, services, serviceOwners, gc)

	// A rejected object that was good before stays as it was.
	for key := range r.rejected {
		if prev, ok := s.delivered[key]; ok {
			r.desired[key] = prev
		}
	}
	for key, obj := range r.desired {
		if !deliverable(obj) {
			delete(r.desired, key)
		}
	}
	// Problems first: by the time the objects of a read are delivered, the problems
	// found in the same read are published (Errors, the log).
	s.setProblems(r.problems)
	s.deliver(r.desired, r.winner)
	return saveFailed
}

func owner(key objKey) string { return key.namespace + "/" + key.name }

// allocate gives the planned Services their addresses and ports in one transaction,
// and frees those of Services that are gone. It returns true when the transaction
// could not be saved.
func (s *Source) allocate(r *reconciliation, services []plannedService, present map[string]bool, gc bool) (saveFailed bool) {
	held := s.alloc.Owners()
	// Services that name an IP or port themselves go first, so a dynamic pick of
	// another Service in this pass cannot take it from them.
	sort.SliceStable(services, func(i, j int) bool { return services[i].plan.explicit && !services[j].plan.explicit })
	results := map[objKey]runtime.Object{}
	failed := map[*parsedObject]error{}
	err := s.alloc.Update(func(tx *allocator.Txn) {
		if gc {
			for _, o := range held {
				if !present[o] {
					tx.Release(o)
				}
			}
		}
		for _, ps := range services {
			a, err := tx.Assign(owner(ps.obj.key), ps.plan.req)
			if err != nil {
				failed[ps.obj] = ps.plan.explain(err)
				continue
			}
			results[ps.obj.key] = ps.plan.apply(a)
		}
	})
	var changed []string // owners whose allocation was undone
	if err != nil {
		se, ok := errors.AsType[*allocator.SaveError](err)
		if !ok {
			// Not a save failure (none other exists today): keep every Service as it was.
			for _, ps := range services {
				r.reject(ps.obj, err)
			}
			return true
		}
		// Nothing was saved, so nothing new was allocated: the Services that needed a
		// new ClusterIP or NodePort stay as they were (unprogrammed if new), each
		// reported by name. Those whose allocation did not change are unaffected: an
		// unwritable state directory must not hold up their edits or endpoints.
		changed, saveFailed = se.Changed, true
	}
	for _, ps := range services {
		if e, bad := failed[ps.obj]; bad {
			r.reject(ps.obj, e)
			continue
		}
		if slices.Contains(changed, owner(ps.obj.key)) {
			r.reject(ps.obj, err)
			delete(results, ps.obj.key)
		}
	}
	maps.Copy(r.desired, results)
	return saveFailed
}

// deliverable is false for objects kube-proxy's informers never see.
func deliverable(obj runtime.Object) bool {
	switch o := obj.(type) {
	case *v1.Service:
		_, delegated := o.Labels[labelServiceProxyName]
		return !delegated && o.Spec.ClusterIP != v1.ClusterIPNone
	case *discovery.EndpointSlice:
		_, headless := o.Labels[labelHeadless]
		return !headless
	}
	return true
}

// deliver calls the handler for what differs from what it has: deletions first, so an
// address a deleted Service frees is gone before a new Service shows up with it.
func (s *Source) deliver(desired map[objKey]runtime.Object, winner map[objKey]string) {
	for _, key := range sortedKeys(s.delivered) {
		if _, ok := desired[key]; ok {
			continue
		}
		switch key.kind {
		case kindService:
			s.h.OnServiceDelete(key.namespace, key.name)
		case kindEndpointSlice:
			s.h.OnEndpointSliceDelete(key.namespace, key.name)
		case kindNode:
			s.h.OnNodeDelete(key.name)
		}
		delete(s.delivered, key)
		delete(s.from, key)
	}
	for _, key := range sortedKeys(desired) {
		obj := desired[key]
		if prev, ok := s.delivered[key]; ok && (prev == obj || equality.Semantic.DeepEqual(prev, obj)) {
			continue
		}
		// The handler owns what it gets; keep our own copy for the next comparison.
		s.delivered[key] = obj
		s.from[key] = winner[key]
		switch o := obj.DeepCopyObject().(type) {
		case *v1.Service:
			s.h.OnServiceUpsert(o)
		case *discovery.EndpointSlice:
			s.h.OnEndpointSliceUpsert(o)
		case *v1.Node:
			s.h.OnNodeUpsert(o)
		}
	}
}

func sortedKeys(m map[objKey]runtime.Object) []objKey {
	keys := slices.Collect(maps.Keys(m))
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	return keys
}

// setProblems publishes the current problems and logs each new one once.
func (s *Source) setProblems(ps []problem) {
	errs := make([]error, 0, len(ps))
	now := map[string]string{}
	for _, p := range ps {
		errs = append(errs, p.err)
		msg := p.err.Error()
		now[p.id] = msg
		if s.logged[p.id] != msg {
			klog.ErrorS(p.err, "Ignoring a manifest")
		}
	}
	s.logged = now
	s.mu.Lock()
	s.problems = errs
	s.mu.Unlock()
}
