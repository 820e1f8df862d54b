package trace

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/netip"
	"sort"
	"strings"
)

// Verdict is what the ruleset does with the traced packet.
type Verdict string

const (
	// VerdictDNAT means the packet is sent to one of Result.Endpoints.
	VerdictDNAT Verdict = "DNAT"
	// VerdictReject means a proxy rule rejects it (a Service without endpoints, an unused
	// port of a ClusterIP).
	VerdictReject Verdict = "REJECT"
	// VerdictDrop means a rule or a chain policy drops it (no local endpoints,
	// loadBalancerSourceRanges, an unallocated ClusterIP).
	VerdictDrop Verdict = "DROP"
	// VerdictAccept means a proxy rule accepts it as it is (a health check NodePort).
	VerdictAccept Verdict = "ACCEPT"
	// VerdictNone means no Service rule decided anything; the packet passes unmodified.
	VerdictNone Verdict = "NONE"
)

// Step is one rule the packet matched, in the order it matched them.
type Step struct {
	// Table is "nat" or "filter" in iptables mode, "ip kube-proxy" or
	// "ip6 kube-proxy" in nftables mode.
	Table string `json:"table"`
	Chain string `json:"chain"`
	// Rule is the rule's text: as iptables-save prints it, or an nft-syntax rendering
	// of nft's JSON.
	Rule string `json:"rule"`
}

// Endpoint is one destination a DNAT may choose.
type Endpoint struct {
	Address     string  `json:"address"` // "IP:port", "[IPv6]:port"
	Probability float64 `json:"probability"`
	// Masqueraded is true when traffic to this endpoint is source-NATed (it can
	// differ between endpoints: hairpin traffic is masqueraded only to itself).
	Masqueraded bool `json:"masqueraded"`
	// Path holds the rules matched on the way to this endpoint after the shared
	// Result.Path, when the ruleset branches.
	Path []Step `json:"path,omitempty"`
}

// Affinity is present when the Service has ClientIP session affinity.
type Affinity struct {
	TimeoutSeconds int `json:"timeoutSeconds"`
}

// PacketInfo echoes the traced packet in the JSON document.
type PacketInfo struct {
	Protocol    string `json:"protocol"`
	Source      string `json:"source"`
	SourcePort  uint16 `json:"sourcePort,omitempty"`
	Destination string `json:"destination"`
	Port        uint16 `json:"port"`
	From        Origin `json:"from"`
	InInterface string `json:"inInterface,omitempty"`
}

// Result is the outcome of a trace; its JSON form is the stable document of
// "kproxy trace --output json" (see the package documentation).
type Result struct {
	Mode    string     `json:"mode"` // "iptables" or "nftables"
	Packet  PacketInfo `json:"packet"`
	Verdict Verdict    `json:"verdict"`
	// Service is "namespace/name:port" ("namespace/name" for an unnamed port), taken
	// from the rules' comments or chain names; "" when no Service rule matched.
	Service     string     `json:"service,omitempty"`
	Endpoints   []Endpoint `json:"endpoints"`
	Masqueraded bool       `json:"masqueraded"`
	Affinity    *Affinity  `json:"affinity,omitempty"`
	Path        []Step     `json:"path"`
	Notes       []string   `json:"notes,omitempty"`
}

// branch is one possible fate of the packet: random endpoint choices split a trace
// into branches, each with its weight (probability) and its own path.
type branch struct {
	f        flow
	weight   float64
	path     []Step
	end      Verdict // DROP or REJECT once terminated; "" otherwise
	accepted bool    // a proxy rule explicitly accepted the packet
	service  string
	affinity int
	notes    []string
}

func (b *branch) clone() *branch {
	c := *b
	c.path = append([]Step(nil), b.path...)
	c.notes = append([]string(nil), b.notes...)
	return &c
}

func (b *branch) step(table, chain, rule, service string) {
	b.path = append(b.path, Step{Table: table, Chain: chain, Rule: rule})
	if b.service == "" && service != "" {
		b.service = service
	}
}

func (b *branch) note(format string, args ...any) {
	n := fmt.Sprintf(format, args...)
	for _, o := range b.notes {
		if o == n {
			return
		}
	}
	b.notes = append(b.notes, n)
}

func (b *branch) verdict() Verdict {
	switch {
	case b.end != "":
		return b.end
	case b.f.dnat:
		return VerdictDNAT
	case b.accepted:
		return VerdictAccept
	}
	return VerdictNone
}

// summarize folds the branches of a trace into a Result.
func summarize(mode string, p Packet, branches []*branch) *Result {
	r := &Result{
		Mode: mode,
		Packet: PacketInfo{Protocol: p.Protocol, Source: p.Source.String(), SourcePort: p.SourcePort,
			Destination: p.Destination.String(), Port: p.Port, From: p.From, InInterface: p.InInterface},
		Endpoints: []Endpoint{},
	}
	byVerdict := map[Verdict]float64{}
	heaviest := branches[0]
	for _, b := range branches {
		byVerdict[b.verdict()] += b.weight
		if b.weight > heaviest.weight {
			heaviest = b
		}
		for _, n := range b.notes {
			r.addNote(n)
		}
	}
	r.Verdict = heaviest.verdict()
	if len(byVerdict) > 1 {
		var parts []string
		for v, w := range byVerdict {
			parts = append(parts, fmt.Sprintf("%s with probability %s", v, fmtProb(w)))
		}
		sort.Strings(parts)
		r.addNote("the packet's fate depends on a random choice: " + strings.Join(parts, ", "))
	}
	r.Service = heaviest.service
	r.Masqueraded = heaviest.f.masq
	if heaviest.affinity > 0 {
		r.Affinity = &Affinity{TimeoutSeconds: heaviest.affinity}
	}
	if len(branches) == 1 {
		r.Path = heaviest.path
		if r.Verdict == VerdictDNAT {
			r.Endpoints = append(r.Endpoints, Endpoint{Address: heaviest.f.dnatTarget(), Probability: 1, Masqueraded: heaviest.f.masq})
		}
		return r
	}

	// The shared part of the paths, then each endpoint's own continuation.
	common := len(branches[0].path)
	for _, b := range branches[1:] {
		n := 0
		for n < common && n < len(b.path) && b.path[n] == branches[0].path[n] {
			n++
		}
		common = n
	}
	r.Path = branches[0].path[:common]
	if r.Verdict != VerdictDNAT {
		r.Path = heaviest.path
		return r
	}
	index := map[string]int{}
	r.Masqueraded = false
	for _, b := range branches {
		if b.verdict() != VerdictDNAT {
			continue
		}
		addr := b.f.dnatTarget()
		i, ok := index[addr]
		if !ok {
			i = len(r.Endpoints)
			index[addr] = i
			r.Endpoints = append(r.Endpoints, Endpoint{Address: addr, Path: b.path[common:]})
		}
		r.Endpoints[i].Probability += b.weight
		r.Endpoints[i].Masqueraded = r.Endpoints[i].Masqueraded || b.f.masq
		r.Masqueraded = r.Masqueraded || b.f.masq
		if b.affinity > 0 && r.Affinity == nil {
			r.Affinity = &Affinity{TimeoutSeconds: b.affinity}
		}
	}
	sort.SliceStable(r.Endpoints, func(i, j int) bool { return endpointLess(r.Endpoints[i].Address, r.Endpoints[j].Address) })
	for i := range r.Endpoints {
		r.Endpoints[i].Probability = math.Round(r.Endpoints[i].Probability*1e6) / 1e6
		if len(r.Endpoints[i].Path) == 0 {
			r.Endpoints[i].Path = nil
		}
	}
	return r
}

func (f *flow) dnatTarget() string { return netip.AddrPortFrom(f.dst, f.dport).String() }

// endpointLess orders "IP:port" addresses numerically.
func endpointLess(a, b string) bool {
	x, err1 := netip.ParseAddrPort(a)
	y, err2 := netip.ParseAddrPort(b)
	if err1 != nil || err2 != nil {
		return a < b
	}
	return x.Compare(y) < 0
}

func (r *Result) addNote(n string) {
	for _, o := range r.Notes {
		if o == n {
			return
		}
	}
	r.Notes = append(r.Notes, n)
}

// EndpointAddresses returns the endpoints' addresses, sorted.
func (r *Result) EndpointAddresses() []string {
	out := make([]string, 0, len(r.Endpoints))
	for _, e := range r.Endpoints {
		out = append(out, e.Address)
	}
	sort.Strings(out)
	return out
}

// WriteJSON writes the result as the stable JSON document, indented, with a newline.
func (r *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(r)
}

// WriteText writes the result for people.
func (r *Result) WriteText(w io.Writer) error {
	var sb strings.Builder
	p := r.Packet
	src := p.Source
	if p.SourcePort != 0 {
		src = netip.AddrPortFrom(netip.MustParseAddr(p.Source), p.SourcePort).String()
	}
	fmt.Fprintf(&sb, "Packet:      %s %s -> %s from %s (%s mode)\n", p.Protocol, src,
		netip.AddrPortFrom(netip.MustParseAddr(p.Destination), p.Port), p.From, r.Mode)
	sb.WriteString("Path:\n")
	writeSteps(&sb, r.Path, "  ")
	if len(r.Path) == 0 {
		sb.WriteString("  (no rule matched)\n")
	}
	for _, e := range r.Endpoints {
		if len(e.Path) > 0 {
			fmt.Fprintf(&sb, "  then, with probability %s, towards %s:\n", fmtProb(e.Probability), e.Address)
			writeSteps(&sb, e.Path, "    ")
		}
	}
	service := r.Service
	if service == "" {
		service = "none"
	}
	fmt.Fprintf(&sb, "Service:     %s\n", service)
	if len(r.Endpoints) > 0 {
		sb.WriteString("Endpoints:\n")
		for _, e := range r.Endpoints {
			m := ""
			if e.Masqueraded {
				m = " (masqueraded)"
			}
			fmt.Fprintf(&sb, "  %-24s probability %s%s\n", e.Address, fmtProb(e.Probability), m)
		}
	}
	if r.Affinity != nil {
		fmt.Fprintf(&sb, "Affinity:    session affinity: ClientIP, timeout %ds\n", r.Affinity.TimeoutSeconds)
	} else {
		sb.WriteString("Affinity:    none\n")
	}
	fmt.Fprintf(&sb, "Masquerade:  %s\n", yesNo(r.Masqueraded))
	fmt.Fprintf(&sb, "Verdict:     %s\n", r.verdictText())
	for _, n := range r.Notes {
		fmt.Fprintf(&sb, "Note:        %s\n", n)
	}
	_, err := io.WriteString(w, sb.String())
	return err
}

func (r *Result) verdictText() string {
	switch r.Verdict {
	case VerdictDNAT:
		return "DNAT to " + strings.Join(r.EndpointAddresses(), ", ")
	case VerdictNone:
		return "NONE (no Service: the packet passes unmodified)"
	}
	return string(r.Verdict)
}

func writeSteps(sb *strings.Builder, steps []Step, indent string) {
	for _, s := range steps {
		fmt.Fprintf(sb, "%s%s %s: %s\n", indent, s.Table, s.Chain, s.Rule)
	}
}

func fmtProb(p float64) string {
	s := fmt.Sprintf("%.4f", p)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
