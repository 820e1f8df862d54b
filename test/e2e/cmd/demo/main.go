// Command demo builds the namespace cluster of package cluster, runs kproxy on the
// manifests in examples/, sends requests to a ClusterIP (from a pod), a NodePort and
// a LoadBalancer IP (from the external client), and prints which endpoint answered
// and which source address it saw. Everything is torn down at the end, on failure
// and on Ctrl-C. Run it as root (hack/demo.sh does).
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

type stdoutLogger struct{}

func (stdoutLogger) Logf(format string, args ...any) { fmt.Printf(format+"\n", args...) }

type flow struct {
	title, from, target string
}

func main() {
	kproxyBin := flag.String("kproxy", "bin/kproxy", "kproxy binary")
	echoBin := flag.String("echoserver", "bin/echoserver", "echoserver binary")
	examples := flag.String("examples", "examples", "directory of manifests to load")
	count := flag.Int("count", 100, "requests per flow")
	flag.Parse()
	if err := run(*kproxyBin, *echoBin, *examples, *count); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

func run(kproxyBin, echoBin, examples string, count int) error {
	log := stdoutLogger{}
	cluster.RemoveLeftovers(log)
	for _, p := range []*string{&kproxyBin, &echoBin} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = abs
	}
	fmt.Println("building the namespace cluster: ext, lan, node1, node2 and four pods ...")
	c, err := cluster.New(log, cluster.Options{KproxyBin: kproxyBin, EchoBin: echoBin})
	if err != nil {
		return err
	}
	// Tear down on Ctrl-C as well as on every return path.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sig
		fmt.Printf("\n%v: tearing the cluster down\n", s)
		c.Close()
		os.Exit(130)
	}()
	defer c.Close()

	if err := copyManifests(examples, c.ManifestDir); err != nil {
		return err
	}
	proxy, err := c.StartKproxy()
	if err != nil {
		return err
	}
	defer func() {
		if err := proxy.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stopping kproxy: %v\n", err)
		}
	}()

	flows := []flow{
		{"ClusterIP web 10.96.0.10:80 from pod-a1", "pod-a1", "10.96.0.10:80"},
		{"NodePort 192.168.50.1:30080 from ext", "ext", cluster.Node1IP + ":30080"},
		{"LoadBalancer 192.168.60.10:80 from ext", "ext", "192.168.60.10:80"},
	}
	for _, f := range flows {
		err := c.WaitFor(func() error {
			r := c.Request(f.from, "tcp", f.target, 1, cluster.Timeout(500*time.Millisecond))[0]
			if r.Error != "" {
				return fmt.Errorf("%s: %s", f.title, r.Error)
			}
			return nil
		}, 20*time.Second)
		if err != nil {
			fmt.Printf("kproxy log (%s):\n%s\n", proxy.LogPath, proxy.Logs())
			return fmt.Errorf("kproxy did not make the flow work: %w", err)
		}
	}
	for _, f := range flows {
		replies := c.Request(f.from, "tcp", f.target, count)
		if err := printTable(f, replies); err != nil {
			return err
		}
	}
	fmt.Println("pod IPs: pod-a1 10.244.1.11, pod-a2 10.244.1.12 (node1); pod-b1 10.244.2.11, pod-b2 10.244.2.12 (node2)")
	fmt.Println("node1 is 192.168.50.1 (10.244.1.1 towards its pods), ext is 192.168.50.100")
	return nil
}

func copyManifests(from, to string) error {
	files, err := filepath.Glob(filepath.Join(from, "*.yaml"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("no *.yaml manifests in %s", from)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(to, filepath.Base(f)), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func printTable(f flow, replies []cluster.Reply) error {
	fmt.Printf("\n%s: %d requests\n", f.title, len(replies))
	var b strings.Builder
	fmt.Fprintln(&b, "  endpoint\tnode\tanswers\tsource address seen")
	spread, seen := cluster.Spread(replies), cluster.SeenIPs(replies)
	names := make([]string, 0, len(spread))
	for n := range spread {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "  %s\t%s\t%d\t%s\n", n, cluster.PodByName(n).Node, spread[n], strings.Join(seen[n], ", "))
	}
	for e, n := range cluster.Errors(replies) {
		fmt.Fprintf(&b, "  (failed: %s)\t\t%d\t\n", e, n)
	}
	w := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	return w.Flush()
}
