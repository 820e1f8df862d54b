package kubecluster

import (
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// ProxyFocus selects the upstream e2e tests that judge a Service proxy: the
// [sig-network] Services, Networking Granular Checks: Services, Conntrack and
// KubeProxy containers.
const ProxyFocus = `\[sig-network\] (Services|Networking Granular Checks: Services|Conntrack|KubeProxy) `

// E2EOptions configure one run of the upstream e2e suite against the cluster.
type E2EOptions struct {
	// ReportDir receives junit.xml, e2e.log and summary.md.
	ReportDir string
	// Focus and Skip are ginkgo regular expressions; Focus defaults to ProxyFocus.
	Focus, Skip string
	// Label names the run in the summary (e.g. "kproxy nftables").
	Label string
	// Procs is the number of parallel suite processes; default 4 (the specs mostly
	// wait for pods and packets).
	Procs int
	// Stdout receives the suite's progress as it runs.
	Stdout io.Writer
}

// RunE2E runs e2e.test (from ToolsDir) in the control plane's namespace, where the
// API server and every pod and Service are reachable, and writes the summary.
func (c *Cluster) RunE2E(o E2EOptions) (*Summary, error) {
	if o.Focus == "" {
		o.Focus = ProxyFocus
	}
	if err := os.MkdirAll(o.ReportDir, 0o755); err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(o.ReportDir, "e2e.log"))
	if err != nil {
		return nil, err
	}
	defer func() { _ = logFile.Close() }()
	if o.Procs == 0 {
		o.Procs = 4
	}
	// ginkgo runs the suite's binary in o.Procs processes; [Serial] specs run alone
	// at the end. The flags after "--" are the suite's own.
	args := []string{
		"--net=/run/netns/" + cpNS, "--", c.tool("ginkgo"), "run",
		"--procs=" + fmt.Sprint(o.Procs),
		"--focus=" + o.Focus,
		"--junit-report=junit.xml",
		"--output-dir=" + o.ReportDir,
		"--no-color", "-v", "--timeout=4h",
	}
	if o.Skip != "" {
		args = append(args, "--skip="+o.Skip)
	}
	args = append(args, c.tool("e2e.test"), "--",
		"--kubeconfig="+c.AdminKubeconfig,
		"--provider=local",
		"--kubectl-path="+c.tool("kubectl"),
		"--num-nodes="+fmt.Sprint(len(Nodes)),
		"--report-dir="+o.ReportDir,
	)
	cmd := exec.Command("nsenter", args...)
	var out io.Writer = logFile
	if o.Stdout != nil {
		out = io.MultiWriter(logFile, o.Stdout)
	}
	cmd.Stdout, cmd.Stderr = out, out
	// The suite reads its own test data from the working directory's test/ tree
	// only for storage tests; it runs from the report directory.
	cmd.Dir = o.ReportDir
	runErr := cmd.Run()
	s, err := ReadJUnit(filepath.Join(o.ReportDir, "junit.xml"))
	if err != nil && runErr != nil {
		return nil, fmt.Errorf("e2e.test: %w; no report: %w", runErr, err)
	}
	if err != nil {
		return nil, fmt.Errorf("e2e.test: no report: %w", err)
	}
	s.Label = o.Label
	if err := os.WriteFile(filepath.Join(o.ReportDir, "summary.md"), []byte(s.Markdown()), 0o644); err != nil {
		return nil, err
	}
	return s, nil
}

// Summary is a JUnit report reduced to what a reader wants: the counts, and the name
// and reason of every failure and skip.
type Summary struct {
	Label                   string
	Passed, Failed, Skipped int
	Failures, Skips         []Case
}

// Case is one test that did not pass.
type Case struct {
	Name, Reason string
}

type junitSuites struct {
	Suites []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Cases []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name    string        `xml:"name,attr"`
	Status  string        `xml:"status,attr"`
	Failure *junitMessage `xml:"failure"`
	Error   *junitMessage `xml:"error"`
	Skipped *junitMessage `xml:"skipped"`
}

type junitMessage struct {
	Message string `xml:"message,attr"`
	Body    string `xml:",chardata"`
}

// ReadJUnit reads a ginkgo JUnit report. Ginkgo lists every spec, the ones its focus
// left out too (as skipped with no message, status "skipped"): those are not counted,
// only the specs that were selected.
func ReadJUnit(path string) (*Summary, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var js junitSuites
	if err := xml.Unmarshal(b, &js); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s := &Summary{}
	for _, suite := range js.Suites {
		for _, tc := range suite.Cases {
			tc.Name = strings.TrimPrefix(tc.Name, "[It] ")
			if strings.HasPrefix(tc.Name, "[SynchronizedBeforeSuite]") || strings.HasPrefix(tc.Name, "[SynchronizedAfterSuite]") ||
				strings.HasPrefix(tc.Name, "[ReportAfterSuite]") || strings.HasPrefix(tc.Name, "[ReportBeforeSuite]") {
				if tc.Failure != nil || tc.Error != nil {
					s.Failed++
					s.Failures = append(s.Failures, Case{tc.Name, reason(tc.Failure, tc.Error)})
				}
				continue
			}
			switch {
			case tc.Failure != nil || tc.Error != nil:
				s.Failed++
				s.Failures = append(s.Failures, Case{tc.Name, reason(tc.Failure, tc.Error)})
			case tc.Skipped != nil:
				if r := reason(tc.Skipped); r == "" || r == "skipped" {
					// Not selected by the focus (ginkgo lists those as skipped
					// with no reason): not part of this run.
					continue
				}
				s.Skipped++
				s.Skips = append(s.Skips, Case{tc.Name, reason(tc.Skipped)})
			default:
				s.Passed++
			}
		}
	}
	sort.Slice(s.Failures, func(i, j int) bool { return s.Failures[i].Name < s.Failures[j].Name })
	sort.Slice(s.Skips, func(i, j int) bool { return s.Skips[i].Name < s.Skips[j].Name })
	return s, nil
}

func reason(ms ...*junitMessage) string {
	for _, m := range ms {
		if m == nil {
			continue
		}
		if m.Message != "" {
			return firstLine(m.Message)
		}
		return firstLine(m.Body)
	}
	return ""
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

// Markdown renders the summary.
func (s *Summary) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n\n%d passed, %d failed, %d skipped\n", s.Label, s.Passed, s.Failed, s.Skipped)
	for _, part := range []struct {
		title string
		cases []Case
	}{{"Failed", s.Failures}, {"Skipped", s.Skips}} {
		if len(part.cases) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n## %s\n\n", part.title)
		for _, c := range part.cases {
			fmt.Fprintf(&b, "- %s\n  - %s\n", c.Name, c.Reason)
		}
	}
	return b.String()
}
