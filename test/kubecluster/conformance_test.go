package kubecluster

import (
	"os"
	"path/filepath"
	"testing"
)

// TestReadJUnit: specs the focus left out are not counted; a spec skipped by the
// suite is, with its reason; failures carry their message.
func TestReadJUnit(t *testing.T) {
	report := `<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="5" disabled="0" errors="0" failures="1" time="10">
  <testsuite name="Kubernetes e2e suite" package="/" tests="5" disabled="0" skipped="3" errors="0" failures="1" time="10">
    <testcase name="[SynchronizedBeforeSuite]" classname="Kubernetes e2e suite" status="passed" time="1"></testcase>
    <testcase name="[It] [sig-network] Services should serve a basic endpoint from pods [Conformance]" classname="Kubernetes e2e suite" status="passed" time="3"></testcase>
    <testcase name="[It] [sig-network] Services should be able to up and down services" classname="Kubernetes e2e suite" status="failed" time="5">
      <failure message="service not reachable via ClusterIP" type="failed">[FAILED] service not reachable via ClusterIP
more detail</failure>
    </testcase>
    <testcase name="[It] [sig-network] Services should work after restarting apiserver [Disruptive]" classname="Kubernetes e2e suite" status="skipped" time="0.1">
      <skipped message="skipped - Only supported for providers [gce gke] (not local)"></skipped>
    </testcase>
    <testcase name="[It] [sig-apps] Deployment should run" classname="Kubernetes e2e suite" status="skipped" time="0">
      <skipped message="skipped"></skipped>
    </testcase>
  </testsuite>
</testsuites>`
	path := filepath.Join(t.TempDir(), "junit.xml")
	if err := os.WriteFile(path, []byte(report), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := ReadJUnit(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.Passed != 1 || s.Failed != 1 || s.Skipped != 1 {
		t.Fatalf("passed/failed/skipped %d/%d/%d, want 1/1/1", s.Passed, s.Failed, s.Skipped)
	}
	if s.Failures[0].Reason != "service not reachable via ClusterIP" {
		t.Errorf("failure reason %q", s.Failures[0].Reason)
	}
	if s.Skips[0].Reason != "skipped - Only supported for providers [gce gke] (not local)" {
		t.Errorf("skip reason %q", s.Skips[0].Reason)
	}
}
