package trace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
)

// Modes of Options.Mode.
const (
	ModeAuto     = "auto"
	ModeIPTables = "iptables"
	ModeNFTables = "nftables"
)

// Options say what to trace and where the ruleset comes from.
type Options struct {
	Packet Packet
	// Mode is "auto" (or ""), "iptables" or "nftables". Auto picks the mode whose
	// ruleset holds kproxy's rules (iptables nat KUBE-SERVICES, or the nftables table
	// kube-proxy); with FromFile it follows the file's format.
	Mode string
	// FromFile reads a saved dump (iptables-save text, or nft -j JSON) instead of the
	// live ruleset.
	FromFile string
	// LocalAddresses override the node's addresses; nil reads those of the current
	// network namespace's interfaces. Required with FromFile.
	LocalAddresses []netip.Addr
}

// Run traces a packet through the live ruleset of the current network namespace, or
// through a saved dump.
func Run(ctx context.Context, o Options) (*Result, error) {
	if err := o.Packet.Validate(); err != nil {
		return nil, err
	}
	switch o.Mode {
	case "", ModeAuto, ModeIPTables, ModeNFTables:
	default:
		return nil, fmt.Errorf("mode %q is not one of auto, iptables, nftables", o.Mode)
	}
	env := Env{LocalAddresses: o.LocalAddresses}
	if env.LocalAddresses == nil {
		if o.FromFile != "" {
			return nil, errors.New("--local-addresses is required with --from-file: the tracer must know which addresses are the node's")
		}
		addrs, err := InterfaceAddresses()
		if err != nil {
			return nil, err
		}
		env.LocalAddresses = addrs
	}
	mode, dump, notes, err := readRuleset(ctx, o)
	if err != nil {
		return nil, err
	}
	var r *Result
	if mode == ModeNFTables {
		r, err = TraceNFTables(dump, o.Packet, env)
	} else {
		r, err = TraceIPTables(dump, o.Packet, env)
	}
	if err != nil {
		return nil, err
	}
	for _, n := range notes {
		r.addNote(n)
	}
	return r, nil
}

// readRuleset returns the mode and the dump to trace, and notes about the choice.
func readRuleset(ctx context.Context, o Options) (string, []byte, []string, error) {
	if o.FromFile != "" {
		data, err := os.ReadFile(o.FromFile)
		if err != nil {
			return "", nil, nil, err
		}
		mode := ModeIPTables
		if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
			mode = ModeNFTables
		}
		if o.Mode == ModeIPTables || o.Mode == ModeNFTables {
			if o.Mode != mode {
				return "", nil, nil, fmt.Errorf("%s: the file holds an %s dump, not %s (--mode)", o.FromFile, mode, o.Mode)
			}
		}
		return mode, data, nil, nil
	}
	v6 := o.Packet.IPv6()
	if o.Mode == ModeNFTables {
		data, err := nftDump(ctx, v6)
		return ModeNFTables, data, nil, err
	}
	ipt, iptErr := iptablesSave(ctx, v6)
	if o.Mode == ModeIPTables {
		return ModeIPTables, ipt, nil, iptErr
	}
	if iptErr == nil && bytes.Contains(ipt, []byte(":KUBE-SERVICES ")) {
		return ModeIPTables, ipt, nil, nil
	}
	if nft, err := nftDump(ctx, v6); err == nil {
		return ModeNFTables, nft, nil, nil
	}
	if iptErr != nil {
		return "", nil, nil, fmt.Errorf("no ruleset to trace: %w (and nft has no table %s)", iptErr, NFTTable)
	}
	return ModeIPTables, ipt, []string{"neither iptables nor nftables holds kproxy's rules; traced the iptables ruleset"}, nil
}

func iptablesSave(ctx context.Context, v6 bool) ([]byte, error) {
	cmd := "iptables-save"
	if v6 {
		cmd = "ip6tables-save"
	}
	return output(ctx, cmd)
}

func nftDump(ctx context.Context, v6 bool) ([]byte, error) {
	family := "ip"
	if v6 {
		family = "ip6"
	}
	return output(ctx, "nft", "-j", "list", "table", family, NFTTable)
}

func output(ctx context.Context, name string, args ...string) ([]byte, error) {
	var stderr bytes.Buffer
	c := exec.CommandContext(ctx, name, args...)
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %v: %w: %s", name, args, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// InterfaceAddresses returns the addresses of the current network namespace's
// interfaces: what the kernel treats as local.
func InterfaceAddresses() ([]netip.Addr, error) {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("listing the interfaces' addresses: %w", err)
	}
	out := []netip.Addr{}
	for _, a := range as {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out, nil
}
