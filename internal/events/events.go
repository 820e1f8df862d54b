// Package events records Kubernetes Events (events.k8s.io/v1) about what kproxy
// cannot do with an object: a part of a Service or EndpointSlice it cannot program, a
// NodePort it cannot reserve on its Node. Operators look for such problems with
// `kubectl events`; the log has them too, but only on the node.
//
// It wraps client-go's tools/events, as upstream kube-proxy does. Its broadcaster
// deduplicates: a second Event with the same object, reason and action becomes a
// series (one PATCH of the count, then a refresh every 30 minutes at most) instead of
// a new Event, so a problem that persists across syncs costs no API calls per sync.
package events

import (
	"context"
	"unicode/utf8"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
)

// ReportingController names kproxy in its Events (upstream's is "kube-proxy").
const ReportingController = "kproxy"

// Recorder records Warning Events. The zero value and a nil *Recorder record nothing:
// the manifests source has no API server to write to (callers log the problem
// themselves in any case).
type Recorder struct {
	broadcaster events.EventBroadcaster
	rec         events.EventRecorder
}

// NewAPI returns a Recorder that writes Events through client until Stop. Writing
// happens in the background and is retried by client-go; a Warning never blocks.
func NewAPI(ctx context.Context, client kubernetes.Interface) (*Recorder, error) {
	b := events.NewBroadcaster(&events.EventSinkImpl{Interface: client.EventsV1()})
	if err := b.StartRecordingToSinkWithContext(ctx); err != nil {
		return nil, err
	}
	return &Recorder{broadcaster: b, rec: b.NewRecorder(scheme.Scheme, ReportingController)}, nil
}

// Warning records a Warning Event about the object: reason is CamelCase (the kind of
// problem), action what kproxy was doing, note the whole message naming the object.
func (r *Recorder) Warning(regarding *v1.ObjectReference, reason, action, note string) {
	r.WarningRelated(regarding, nil, reason, action, note)
}

// WarningRelated is Warning with a related object (may be nil): the Node regarding a
// NodePort, related to the Service that wants it.
func (r *Recorder) WarningRelated(regarding, related *v1.ObjectReference, reason, action, note string) {
	if r == nil || r.rec == nil {
		return
	}
	var rel runtime.Object
	if related != nil {
		rel = related
	}
	// note is not a format: an address or a name may hold a '%'.
	r.rec.Eventf(regarding, rel, v1.EventTypeWarning, reason, action, "%s", truncate(note))
}

// maxNote is the API server's limit on an Event's note; a longer one is refused.
const maxNote = 1024

// truncate shortens a note to maxNote bytes, marking the cut, on a rune boundary.
func truncate(note string) string {
	if len(note) <= maxNote {
		return note
	}
	const mark = " [...]"
	cut := maxNote - len(mark)
	for cut > 0 && !utf8.RuneStart(note[cut]) {
		cut--
	}
	return note[:cut] + mark
}

// Stop stops writing Events; those not yet written are dropped.
func (r *Recorder) Stop() {
	if r != nil && r.broadcaster != nil {
		r.broadcaster.Shutdown()
	}
}

// NodeRef refers to the Node kproxy runs on, the way upstream kube-proxy refers to it
// (the UID is the name: kproxy does not need to read the Node to report on it).
func NodeRef(name string) *v1.ObjectReference {
	return &v1.ObjectReference{Kind: "Node", Name: name, UID: types.UID(name)}
}
