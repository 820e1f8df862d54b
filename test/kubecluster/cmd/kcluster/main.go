// Command kcluster runs the kubelet cluster of test/kubecluster; hack/cluster.sh and
// hack/conformance.sh call it.
//
//	kcluster up [flags]      bring the cluster up and keep it until SIGTERM or SIGINT,
//	                         then take it down; writes WORK/ready (or WORK/failed)
//	kcluster down [flags]    remove what a cluster left behind (its supervisor gone)
//	kcluster e2e [flags]     run the upstream e2e suite against the running cluster
//	kcluster status [flags]  print the nodes and the pods
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kproxy/kproxy/test/kubecluster"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: kcluster up|down|e2e|status [flags]")
		os.Exit(2)
	}
	verb := os.Args[1]
	fs := flag.NewFlagSet(verb, flag.ExitOnError)
	cfg := kubecluster.Config{}
	fs.StringVar(&cfg.Repo, "repo", ".", "the kproxy checkout")
	fs.StringVar(&cfg.ToolsDir, "tools", "", "the Kubernetes binaries (hack/build-tools.sh cluster)")
	fs.StringVar(&cfg.BinDir, "bin", "", "kproxy and pause, static")
	fs.StringVar(&cfg.CacheDir, "cache", "/var/cache/kproxy-cluster", "what outlives a cluster (Debian root filesystems)")
	fs.StringVar(&cfg.WorkDir, "work", "/var/lib/kproxy-cluster", "the cluster's data, configuration and logs")
	fs.StringVar(&cfg.Proxy, "proxy", "kproxy", "kproxy or upstream")
	fs.StringVar(&cfg.Mode, "mode", "iptables", "the proxy mode")
	report := fs.String("report", "", "e2e: the report directory")
	focus := fs.String("focus", "", "e2e: ginkgo focus (default: the Service proxy tests)")
	skip := fs.String("skip", "", "e2e: ginkgo skip")
	label := fs.String("label", "", "e2e: the run's name in the summary")
	_ = fs.Parse(os.Args[2:])
	cfg.Log = func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "%s kcluster: %s\n", time.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
	var err error
	switch verb {
	case "up":
		err = up(cfg)
	case "down":
		err = kubecluster.New(cfg).Down()
	case "e2e":
		err = e2e(cfg, kubecluster.E2EOptions{ReportDir: *report, Focus: *focus, Skip: *skip, Label: *label, Stdout: os.Stdout})
	case "status":
		err = status(cfg)
	default:
		err = fmt.Errorf("unknown verb %q", verb)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "kcluster %s: %v\n", verb, err)
		os.Exit(1)
	}
}

// up brings the cluster up, marks it ready, and holds it until a signal.
func up(cfg kubecluster.Config) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	c := kubecluster.New(cfg)
	ready, failed := filepath.Join(cfg.WorkDir, "ready"), filepath.Join(cfg.WorkDir, "failed")
	_ = os.Remove(ready)
	_ = os.Remove(failed)
	err := c.Up(ctx)
	if err != nil {
		_ = os.WriteFile(failed, []byte(err.Error()+"\n"), 0o644)
	} else {
		_ = os.WriteFile(ready, []byte(fmt.Sprintf("%s %s\n", cfg.Proxy, cfg.Mode)), 0o644)
		<-ctx.Done()
	}
	cfg.Log("taking the cluster down")
	if derr := c.Down(); derr != nil {
		cfg.Log("down: %v", derr)
	}
	_ = os.Remove(ready)
	return err
}

func e2e(cfg kubecluster.Config, o kubecluster.E2EOptions) error {
	if o.ReportDir == "" {
		return fmt.Errorf("--report is required")
	}
	c := kubecluster.New(cfg)
	s, err := c.RunE2E(o)
	if err != nil {
		return err
	}
	fmt.Print(s.Markdown())
	return nil
}

func status(cfg kubecluster.Config) error {
	c := kubecluster.New(cfg)
	if err := c.Connect(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, n := range nodes.Items {
		ready := "NotReady"
		for _, cond := range n.Status.Conditions {
			if cond.Type == "Ready" && cond.Status == "True" {
				ready = "Ready"
			}
		}
		fmt.Printf("node %s %s %v\n", n.Name, ready, n.Spec.PodCIDRs)
	}
	pods, err := c.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, p := range pods.Items {
		fmt.Printf("pod %s/%s %s on %s %s\n", p.Namespace, p.Name, p.Status.Phase, p.Spec.NodeName, p.Status.PodIP)
	}
	return nil
}
