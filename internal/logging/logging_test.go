package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/klog/v2"
)

// apply runs Apply and restores klog's defaults when the test ends (Apply works once
// per process otherwise).
func apply(t *testing.T, c *logsapi.LoggingConfiguration, gates map[string]bool, out, errOut *bytes.Buffer) error {
	t.Helper()
	err := Apply(c, gates, out, errOut)
	t.Cleanup(func() {
		klog.Flush()
		if err := logsapi.ResetForTest(nil); err != nil {
			t.Errorf("resetting the logging configuration: %v", err)
		}
	})
	return err
}

// lines parses every line of b as one JSON object.
func lines(t *testing.T, b *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %v\n%s", err, l)
		}
		out = append(out, m)
	}
	return out
}

// --logging-format=json (kube-proxy's flag, or logging.format in a config file) makes
// every log line one JSON object, from the global klog calls and from the contextual
// loggers of the proxy loop alike, with kube-proxy's keys.
func TestJSONFormat(t *testing.T) {
	c := logsapi.NewLoggingConfiguration()
	c.Format = "json"
	c.Verbosity = 2
	var out, errOut bytes.Buffer
	if err := apply(t, c, nil, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	klog.InfoS("Starting kproxy", "mode", "nftables")
	logger := klog.FromContext(klog.NewContext(context.Background(), klog.Background().WithValues("runner", "sync")))
	logger.V(2).Info("Synced nftables rules", "services", 3)
	logger.V(3).Info("not shown at -v=2")
	klog.ErrorS(errors.New("restore refused"), "Sync failed")
	klog.Flush()

	got := lines(t, &errOut) // without split streams, everything goes to the error stream
	if len(got) != 3 {
		t.Fatalf("%d log lines, want 3 (the V(3) one is filtered):\n%s", len(got), errOut.String())
	}
	for i, want := range []map[string]any{
		{"msg": "Starting kproxy", "mode": "nftables", "v": 0.0},
		{"msg": "Synced nftables rules", "runner": "sync", "services": 3.0, "v": 2.0},
		{"msg": "Sync failed", "err": "restore refused"},
	} {
		for k, v := range want {
			if got[i][k] != v {
				t.Errorf("line %d: %s = %#v, want %#v (line %v)", i, k, got[i][k], v, got[i])
			}
		}
		if _, ok := got[i]["ts"]; !ok {
			t.Errorf("line %d has no ts: %v", i, got[i])
		}
	}
	if out.Len() != 0 {
		t.Errorf("info stream written without split streams: %q", out.String())
	}
}

// The split stream options are alpha in kube-proxy: refused unless the
// LoggingAlphaOptions gate (in featureGates) is on; then info goes to the info stream.
func TestSplitStreamNeedsItsGate(t *testing.T) {
	c := logsapi.NewLoggingConfiguration()
	c.Format = "json"
	c.Options.JSON.SplitStream = true
	var out, errOut bytes.Buffer
	err := Apply(c, map[string]bool{"SomeOtherGate": true}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "LoggingAlphaOptions") {
		t.Fatalf("split stream without LoggingAlphaOptions: %v, want an error naming the gate", err)
	}
	if err := apply(t, c, map[string]bool{"LoggingAlphaOptions": true, "SomeOtherGate": true}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	klog.InfoS("to the info stream")
	klog.ErrorS(nil, "to the error stream")
	klog.Flush()
	if got := lines(t, &out); len(got) != 1 || got[0]["msg"] != "to the info stream" {
		t.Errorf("info stream: %v", got)
	}
	if got := lines(t, &errOut); len(got) != 1 || got[0]["msg"] != "to the error stream" {
		t.Errorf("error stream: %v", got)
	}
}

func TestUnknownFormatIsRefused(t *testing.T) {
	c := logsapi.NewLoggingConfiguration()
	c.Format = "xml"
	err := Apply(c, nil, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "Unsupported log format") {
		t.Fatalf("format xml: %v, want Unsupported log format", err)
	}
}

func TestIsLoggingGate(t *testing.T) {
	for name, want := range map[string]bool{"ContextualLogging": true, "LoggingAlphaOptions": true,
		"LoggingBetaOptions": true, "AllAlpha": false, "NFTablesProxyMode": false} {
		if got := IsLoggingGate(name); got != want {
			t.Errorf("IsLoggingGate(%s) = %v, want %v", name, got, want)
		}
	}
}
