package events

import (
	"context"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// TestWarningWritesOneEventThenASeries: the first Warning creates an
// events.k8s.io/v1 Event regarding the object; repeats of the same problem patch its
// series instead of creating Events.
func TestWarningWritesOneEventThenASeries(t *testing.T) {
	client := fake.NewClientset()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, err := NewAPI(ctx, client)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	svc := &v1.ObjectReference{Kind: "Service", APIVersion: "v1", Namespace: "ns1", Name: "web", UID: "u1"}
	r.Warning(svc, "InvalidServiceAddress", "SyncProxyRules", `Service ns1/web: spec.externalIPs[0] "fe80::1%eth0"`)

	var ev struct {
		reason, note, action, typ, kind, name, controller string
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		list, err := client.EventsV1().Events("ns1").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Items) == 1 {
			e := list.Items[0]
			ev.reason, ev.note, ev.action, ev.typ = e.Reason, e.Note, e.Action, e.Type
			ev.kind, ev.name, ev.controller = e.Regarding.Kind, e.Regarding.Name, e.ReportingController
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d Events after 10s, want 1", len(list.Items))
		}
		time.Sleep(20 * time.Millisecond)
	}
	want := struct {
		reason, note, action, typ, kind, name, controller string
	}{"InvalidServiceAddress", `Service ns1/web: spec.externalIPs[0] "fe80::1%eth0"`, "SyncProxyRules", "Warning", "Service", "web", "kproxy"}
	if ev != want {
		t.Errorf("Event %+v, want %+v", ev, want)
	}

	// The same problem twice more: one PATCH that makes it a series of 2, no CREATE.
	r.Warning(svc, "InvalidServiceAddress", "SyncProxyRules", "again")
	r.Warning(svc, "InvalidServiceAddress", "SyncProxyRules", "and again")
	deadline = time.Now().Add(10 * time.Second)
	for {
		var creates, patches int
		for _, a := range client.Actions() {
			if a.GetResource().Resource != "events" {
				continue
			}
			switch a.(type) {
			case k8stesting.CreateAction:
				creates++
			case k8stesting.PatchAction:
				patches++
			}
		}
		list, err := client.EventsV1().Events("ns1").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if patches > 0 && len(list.Items) == 1 && list.Items[0].Series != nil {
			if creates != 1 || list.Items[0].Series.Count != 2 {
				t.Errorf("%d creates, series count %d; want 1 create and a series of 2", creates, list.Items[0].Series.Count)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no series after 10s: %d creates, %d patches, %d Events", creates, patches, len(list.Items))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNilRecorderRecordsNothing(t *testing.T) {
	var r *Recorder
	r.Warning(NodeRef("node1"), "FailedToReserveNodePort", "ReserveNodePort", "x")
	r.Stop()
	(&Recorder{}).Warning(NodeRef("node1"), "FailedToReserveNodePort", "ReserveNodePort", "x")
	if ref := NodeRef("node1"); ref.Kind != "Node" || ref.Name != "node1" || ref.UID != "node1" || ref.Namespace != "" {
		t.Errorf("NodeRef = %+v", ref)
	}
}

func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		note    string
		wantLen int
	}{
		{strings.Repeat("é", 600), 1024},       // cut at byte 1018, a rune start
		{"a" + strings.Repeat("é", 600), 1023}, // byte 1018 is inside a rune: cut at 1017
		{"Service ns/a", 12},
	} {
		got := truncate(tc.note)
		if len(got) != tc.wantLen || !utf8.ValidString(got) || (len(tc.note) > maxNote) != strings.HasSuffix(got, " [...]") {
			t.Errorf("truncate(%d bytes): %d bytes (want %d), valid UTF-8 %v", len(tc.note), len(got), tc.wantLen, utf8.ValidString(got))
		}
	}
}
