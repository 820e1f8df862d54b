// This file is the "kproxy trace" subcommand: it traces a packet through the node's
// Service rules (see package internal/trace for the evaluation and the JSON document).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/kproxy/kproxy/internal/trace"
)

const traceUsage = `Usage: kproxy trace --source IP --destination IP --port N [flags]

Trace the first packet of a connection through the node's Service rules, the way
netfilter evaluates it, and print its path: every rule it matches (chain and rule
text), the Service it hits (namespace/name:port), the endpoints it can reach with
their probabilities, whether session affinity applies, whether it is masqueraded,
and the verdict:
  DNAT    sent to one of the endpoints listed
  REJECT  rejected (a Service without endpoints, ...)
  DROP    dropped (no local endpoints, loadBalancerSourceRanges, ...)
  ACCEPT  accepted unchanged (a health check NodePort)
  NONE    no Service rule applies: the packet passes unmodified

The ruleset is read live from the current network namespace (iptables-save or
ip6tables-save; "nft -j list table ip|ip6 kube-proxy" in nftables mode), or from a
saved dump with --from-file. --output json prints a stable JSON document:
  {"mode","packet","verdict","service","endpoints":[{"address","probability",
   "masqueraded","path"}],"masqueraded","affinity":{"timeoutSeconds"},
   "path":[{"table","chain","rule"}],"notes"}
Exit status: 0 whatever the verdict, 1 if the ruleset cannot be read, 2 for bad flags.

Flags:
`

// runTrace runs "kproxy trace" with the arguments after "trace" and returns the
// process's exit status.
func runTrace(args []string) int {
	return traceMain(args, os.Stdout, os.Stderr)
}

func traceMain(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("kproxy trace", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		proto    = fs.String("protocol", "tcp", "the packet's protocol: tcp, udp or sctp")
		src      = fs.String("source", "", "the packet's source address (required)")
		dst      = fs.String("destination", "", "the packet's destination address (required)")
		port     = fs.Uint16("port", 0, "the packet's destination port (required)")
		sport    = fs.Uint16("source-port", 0, "the packet's source port; 0 (unknown) makes rules on the source port not match")
		from     = fs.String("from", "pod", "where the packet comes from: pod (a local pod), node (the node itself: OUTPUT path) or external")
		iif      = fs.String("in-interface", "", "the interface the packet arrives on; empty (unknown) makes -i/iifname rules not match")
		mode     = fs.String("mode", "auto", "the proxy mode whose rules to read: auto (the one holding kproxy's rules), iptables or nftables")
		file     = fs.String("from-file", "", "read a saved dump instead of the live ruleset: iptables-save output, or nft -j JSON")
		locals   = fs.StringSlice("local-addresses", nil, "the node's addresses (comma-separated), instead of the interfaces' addresses; required with --from-file")
		output   = fs.String("output", "text", "output format: text or json")
		deadline = fs.Duration("timeout", 30*time.Second, "how long reading the ruleset may take")
	)
	// Help goes to stdout (like "kproxy --help"); usage after a flag error to stderr.
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fs.SetOutput(stdout)
			_, _ = fmt.Fprint(stdout, traceUsage)
			fs.PrintDefaults()
			return 0
		}
		_, _ = fmt.Fprintf(stderr, "Run 'kproxy trace --help' for the flags.\n")
		return 2
	}
	usage := func(format string, a ...any) int {
		_, _ = fmt.Fprintf(stderr, "kproxy trace: "+format+"\nRun 'kproxy trace --help' for the flags.\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return usage("unexpected arguments %q", fs.Args())
	}
	if *src == "" || *dst == "" || *port == 0 {
		return usage("--source, --destination and --port are required")
	}
	if *output != "text" && *output != "json" {
		return usage("--output %q is not one of text, json", *output)
	}
	opts := trace.Options{
		Packet: trace.Packet{Protocol: *proto, Port: *port, SourcePort: *sport, From: trace.Origin(*from), InInterface: *iif},
		Mode:   *mode, FromFile: *file,
	}
	var err error
	if opts.Packet.Source, err = netip.ParseAddr(*src); err != nil {
		return usage("--source: %v", err)
	}
	if opts.Packet.Destination, err = netip.ParseAddr(*dst); err != nil {
		return usage("--destination: %v", err)
	}
	if fs.Changed("local-addresses") {
		opts.LocalAddresses = []netip.Addr{}
		for _, s := range *locals {
			a, err := netip.ParseAddr(strings.TrimSpace(s))
			if err != nil {
				return usage("--local-addresses: %v", err)
			}
			opts.LocalAddresses = append(opts.LocalAddresses, a)
		}
	}
	if err := opts.Packet.Validate(); err != nil {
		return usage("%v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), *deadline)
	defer cancel()
	r, err := trace.Run(ctx, opts)
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "kproxy trace: %v\n", err)
		return 1
	}
	if *output == "json" {
		err = r.WriteJSON(stdout)
	} else {
		err = r.WriteText(stdout)
	}
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "kproxy trace: %v\n", err)
		return 1
	}
	return 0
}
