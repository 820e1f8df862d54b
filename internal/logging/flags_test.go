package logging_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/logging"
)

// kube-proxy's command line, through config.Parse and Apply as cmd/kproxy runs them:
// --logging-format=json and -v reach klog.
func TestLoggingFlagsGiveJSONLogs(t *testing.T) {
	cfg, err := config.Parse([]string{"--logging-format=json", "-v=3", "--hostname-override=node1"})
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := logging.Apply(&cfg.KubeProxy.Logging, cfg.KubeProxy.FeatureGates, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := logsapi.ResetForTest(nil); err != nil {
			t.Errorf("resetting the logging configuration: %v", err)
		}
	})
	klog.V(3).InfoS("Synced iptables rules", "family", "IPv4")
	klog.V(4).InfoS("not shown at -v=3")
	klog.Flush()
	text := strings.TrimSpace(errOut.String())
	var line map[string]any
	if err := json.Unmarshal([]byte(text), &line); err != nil {
		t.Fatalf("not one JSON log line: %v\n%s", err, text)
	}
	if line["msg"] != "Synced iptables rules" || line["family"] != "IPv4" || line["v"] != 3.0 {
		t.Errorf("log line %v", line)
	}
}
