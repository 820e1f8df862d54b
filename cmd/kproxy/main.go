// Command kproxy is a Kubernetes Service proxy: a drop-in replacement for kube-proxy.
// This file parses the command line; run.go wires the parts together.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/pflag"
	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/internal/config"
	"github.com/kproxy/kproxy/internal/iptables"
	"github.com/kproxy/kproxy/internal/logging"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "v0.1.0-dev"

func main() {
	if _, err := iptables.RaiseChildStackLimit(); err != nil {
		fmt.Fprintf(os.Stderr, "kproxy: cannot raise the stack limit for iptables-save: %v\n", err)
	}
	if len(os.Args) > 1 && os.Args[1] == "trace" {
		os.Exit(runTrace(os.Args[2:]))
	}
	cfg, err := config.Parse(os.Args[1:])
	if errors.Is(err, pflag.ErrHelp) {
		fmt.Print(config.Usage())
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "kproxy: %v\nRun 'kproxy --help' for the flags.\n", err)
		os.Exit(2)
	}
	if cfg.PrintVersion {
		fmt.Println("kproxy", version)
		return
	}
	// Before anything logs: the format (text or json), streams and verbosity.
	if err := logging.Apply(&cfg.KubeProxy.Logging, cfg.KubeProxy.FeatureGates, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "kproxy: %v\n", err)
		os.Exit(2)
	}
	for _, w := range cfg.Warnings {
		klog.Warning(w)
	}
	if cfg.Cleanup {
		if err := cleanup(); err != nil {
			klog.ErrorS(err, "Cleanup failed")
			klog.Flush()
			os.Exit(1)
		}
		klog.InfoS("Removed every rule and chain kproxy made")
		klog.Flush()
		return
	}
	if err := run(cfg); err != nil {
		klog.ErrorS(err, "kproxy stopped")
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}
