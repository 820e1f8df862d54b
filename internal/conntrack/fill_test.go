package conntrack

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/klog/v2/textlogger"
)

func TestReadFill(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "net", "netfilter")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFill(Roots{ProcSys: root}); err == nil {
		t.Errorf("ReadFill without the files: no error")
	}
	for name, v := range map[string]string{"nf_conntrack_count": "1234\n", "nf_conntrack_max": "262144\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := ReadFill(Roots{ProcSys: root})
	if err != nil || got != (Fill{Entries: 1234, Max: 262144}) {
		t.Errorf("ReadFill = %+v, %v; want {1234 262144}", got, err)
	}
}

// TestFillWatchLogsOncePerEpisode feeds a sequence of fills and checks which checks
// log: the first at or above 95 %, then nothing until it falls below 90 %.
func TestFillWatchLogsOncePerEpisode(t *testing.T) {
	var buf bytes.Buffer
	logger := textlogger.NewLogger(textlogger.NewConfig(textlogger.Output(&buf)))
	var next Fill
	var readErr error
	w := &FillWatch{Read: func() (Fill, error) { return next, readErr }}
	steps := []struct {
		fill    Fill
		err     error
		wantLog string // "" for no line
	}{
		{Fill{100, 1000}, nil, ""},
		{Fill{949, 1000}, nil, ""},
		{Fill{950, 1000}, nil, "nearly"},
		{Fill{1000, 1000}, nil, ""},
		{Fill{920, 1000}, nil, ""}, // between the thresholds: still the same episode
		{Fill{960, 1000}, nil, ""},
		{Fill{899, 1000}, nil, "room again"},
		{Fill{10, 1000}, nil, ""},
		{Fill{}, errors.New("no such file"), ""}, // V(2): not at the default verbosity
		{Fill{1000, 1000}, nil, "nearly"},
		{Fill{5, 0}, nil, ""}, // no limit known: nothing to say
	}
	for i, s := range steps {
		buf.Reset()
		next, readErr = s.fill, s.err
		w.check(logger)
		got := strings.TrimSpace(buf.String())
		switch {
		case s.wantLog == "" && got != "":
			t.Errorf("step %d (%+v): logged %q, want nothing", i, s.fill, got)
		case s.wantLog != "" && !strings.Contains(got, s.wantLog):
			t.Errorf("step %d (%+v): logged %q, want a line with %q", i, s.fill, got, s.wantLog)
		}
	}
}
