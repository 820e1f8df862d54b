package trace

import (
	"net/netip"
	"strconv"
	"strings"
)

// ruleMatch evaluates a rule's matches against a branch. It returns whether the rule
// can match and, for "-m statistic --mode random", the probability that it does
// (1 otherwise). Matches the tracer does not know never match; the branch notes them.
func (e *iptEval) ruleMatch(b *branch, r *iptRule) (bool, float64) {
	prob := 1.0
	for _, m := range r.matches {
		ok, p := e.moduleMatch(b, r, m)
		if !ok {
			return false, 0
		}
		prob *= p
	}
	return true, prob
}

func (e *iptEval) moduleMatch(b *branch, r *iptRule, m iptMatch) (bool, float64) {
	switch m.module {
	case "statistic":
		return e.statistic(b, r, m)
	case "recent":
		return e.recent(b, r, m), 1
	}
	for _, o := range m.opts {
		ok, known := e.optMatch(b, m.module, o)
		if !known {
			b.note("rule %q: match %s %s is not understood by the tracer; treated as not matching", r.text, moduleLabel(m.module), o.name)
			return false, 0
		}
		if ok == o.neg {
			return false, 0
		}
	}
	switch m.module {
	case "", "tcp", "udp", "sctp", "multiport", "comment", "addrtype", "mark", "conntrack", "state", "nfacct":
		return true, 1
	}
	if len(m.opts) == 0 {
		b.note("rule %q: match module %s is not understood by the tracer; treated as not matching", r.text, m.module)
		return false, 0
	}
	return true, 1
}

func moduleLabel(m string) string {
	if m == "" {
		return "option"
	}
	return "-m " + m
}

// optMatch evaluates one option, ignoring its negation. known is false for options
// the tracer cannot evaluate.
func (e *iptEval) optMatch(b *branch, module string, o iptOpt) (ok, known bool) {
	f := &b.f
	switch o.name {
	case "-s", "--source":
		return addrIn(f.src, o.val()), true
	case "-d", "--destination":
		return addrIn(f.dst, o.val()), true
	case "-p", "--protocol":
		return protoIs(f.proto, o.val()), true
	case "-i", "--in-interface", "-o", "--out-interface":
		iface := f.iif
		if o.name == "-o" || o.name == "--out-interface" {
			iface = ""
		}
		if iface == "" {
			b.note("a rule matches the interface (%s %s) but the interface is unknown (--in-interface): treated as not matching", o.name, o.val())
			return o.neg, true // cancels the negation: the rule does not match either way
		}
		return ifaceIs(iface, o.val()), true
	case "-f", "--fragment":
		return false, true
	case "--dport", "--destination-port":
		return portIn(f.dport, o.val()), true
	case "--sport", "--source-port":
		if f.sport == 0 {
			b.note("a rule matches the source port (%s) but the source port is unknown (--source-port): treated as not matching", o.val())
			return o.neg, true
		}
		return portIn(f.sport, o.val()), true
	case "--dports", "--destination-ports", "--ports":
		return anyPort(f.dport, o.val()), true
	case "--sports", "--source-ports":
		return f.sport != 0 && anyPort(f.sport, o.val()), true
	case "--comment", "--nfacct-name", "--limit-iface-in", "--limit-iface-out":
		return true, true
	case "--src-type", "--dst-type":
		a := f.src
		if o.name == "--dst-type" {
			a = f.dst
		}
		return e.addrType(b, a, o.val()), true
	case "--mark":
		if module != "mark" && module != "" {
			return false, false
		}
		return markMatch(f.mark, o.val()), true
	case "--ctstate", "--state":
		return ctStateMatch(f, o.val()), true
	case "--ctstatus":
		return ctStatusMatch(f, o.val()), true
	case "--match-set":
		if e.env.IPSets == nil || len(o.vals) != 2 {
			return false, false
		}
		members, ok := e.env.IPSets[o.vals[0]]
		if !ok {
			b.note("ipset %s is not among the sets given to the tracer; treated as empty", o.vals[0])
		}
		return setMatch(members, o.vals[1], f), true
	}
	return false, false
}

// setMatch says whether a member of an ipset matches the packet along the match's
// directions ("dst,dst", "dst,dst,src"): each part of a member ("10.96.0.10",
// "tcp:80", "30080", "192.168.0.0/24") is compared with the address or port of the
// packet's source or destination, so any of ipset's ip, port and net types works.
func setMatch(members []string, dims string, f *flow) bool {
	dirs := strings.Split(dims, ",")
	for _, m := range members {
		parts := strings.Split(m, ",")
		if len(parts) != len(dirs) {
			continue
		}
		all := true
		for i, part := range parts {
			all = all && setPartMatch(part, dirs[i], f)
		}
		if all {
			return true
		}
	}
	return false
}

func setPartMatch(part, dir string, f *flow) bool {
	addr, port := f.dst, f.dport
	if dir == "src" {
		addr, port = f.src, f.sport
	}
	if a, err := netip.ParseAddr(part); err == nil {
		return a == addr
	}
	if p, err := netip.ParsePrefix(part); err == nil {
		return p.Contains(addr)
	}
	proto, num, hasProto := strings.Cut(part, ":")
	if !hasProto {
		proto, num = "", part
	}
	n, err := strconv.ParseUint(num, 10, 16)
	return err == nil && (proto == "" || strings.EqualFold(proto, f.proto)) && uint16(n) == port
}

// statistic handles "-m statistic --mode random --probability P".
func (e *iptEval) statistic(b *branch, r *iptRule, m iptMatch) (bool, float64) {
	mode, prob := "", -1.0
	neg := false
	for _, o := range m.opts {
		switch o.name {
		case "--mode":
			mode = o.val()
		case "--probability":
			p, err := strconv.ParseFloat(o.val(), 64)
			if err == nil {
				prob = p
			}
			neg = o.neg
		}
	}
	if mode != "random" || prob < 0 {
		b.note("rule %q: statistic mode %q is not understood by the tracer; treated as matching half the packets", r.text, mode)
		return true, 0.5
	}
	if neg {
		prob = 1 - prob
	}
	return true, prob
}

// recent handles "-m recent": --set always matches (it records the client), while
// --rcheck/--update match only for a client already in the list. A traced packet
// opens a new connection from a client the tracer assumes has no entry yet.
func (e *iptEval) recent(b *branch, _ *iptRule, m iptMatch) bool {
	check := false
	seconds := 0
	for _, o := range m.opts {
		switch o.name {
		case "--rcheck", "--update":
			check = true
		case "--seconds":
			seconds, _ = strconv.Atoi(o.val())
		}
	}
	if !check {
		return true
	}
	if seconds > 0 && b.affinity == 0 {
		b.affinity = seconds
		b.note("session affinity: the trace assumes the client has no affinity entry yet (-m recent lists are not read); a client with one goes back to the endpoint it used last")
	}
	return false
}

func (e *iptEval) addrType(b *branch, a netip.Addr, types string) bool {
	for _, t := range strings.Split(types, ",") {
		switch strings.ToUpper(t) {
		case "LOCAL":
			if e.env.isLocal(a) {
				return true
			}
		case "UNICAST":
			if !e.env.isLocal(a) && !a.IsMulticast() {
				return true
			}
		case "MULTICAST":
			if a.IsMulticast() {
				return true
			}
		default:
			b.note("address type %s is not understood by the tracer; treated as not matching", t)
		}
	}
	return false
}

// addrIn matches an address against "A", "A/len" or "A/mask" (iptables-save prints
// "10.0.0.1/32" and "10.0.0.0/8"; older versions "10.0.0.0/255.0.0.0").
func addrIn(a netip.Addr, spec string) bool {
	for _, s := range strings.Split(spec, ",") {
		if pfx, err := netip.ParsePrefix(s); err == nil {
			if pfx.Contains(a) {
				return true
			}
			continue
		}
		if i := strings.IndexByte(s, '/'); i > 0 {
			// A dotted mask, contiguous or not: kproxy's dispatch tree tests single
			// address bits with masks such as 0.0.0.4/0.0.0.4.
			base, err1 := netip.ParseAddr(s[:i])
			mask, err2 := netip.ParseAddr(s[i+1:])
			if err1 == nil && err2 == nil && maskedEqual(a, base, mask) {
				return true
			}
			continue
		}
		if x, err := netip.ParseAddr(s); err == nil && x == a {
			return true
		}
	}
	return false
}

// maskedEqual reports whether a and base agree on every bit set in mask.
func maskedEqual(a, base, mask netip.Addr) bool {
	if a.Is4() != base.Is4() || base.Is4() != mask.Is4() {
		return false
	}
	ab, bb, mb := a.AsSlice(), base.AsSlice(), mask.AsSlice()
	for i := range mb {
		if ab[i]&mb[i] != bb[i]&mb[i] {
			return false
		}
	}
	return true
}

var protoNumbers = map[string]string{"6": "tcp", "17": "udp", "132": "sctp", "1": "icmp", "58": "ipv6-icmp"}

func protoIs(proto, spec string) bool {
	spec = strings.ToLower(spec)
	if n, ok := protoNumbers[spec]; ok {
		spec = n
	}
	return spec == "all" || spec == "0" || spec == proto
}

// ifaceIs matches an interface name; a trailing "+" matches a prefix.
func ifaceIs(iface, spec string) bool {
	if p, ok := strings.CutSuffix(spec, "+"); ok {
		return strings.HasPrefix(iface, p)
	}
	return iface == spec
}

// portIn matches "80" or "1000:2000".
func portIn(port uint16, spec string) bool {
	lo, hi, ok := strings.Cut(spec, ":")
	l, err := strconv.Atoi(lo)
	if err != nil {
		return false
	}
	if !ok {
		return int(port) == l
	}
	h := 65535
	if hi != "" {
		if h, err = strconv.Atoi(hi); err != nil {
			return false
		}
	}
	return int(port) >= l && int(port) <= h
}

func anyPort(port uint16, spec string) bool {
	for _, s := range strings.Split(spec, ",") {
		if portIn(port, s) {
			return true
		}
	}
	return false
}

// parseMark reads "0x4000" or "0x4000/0x4000" into value and mask.
func parseMark(spec string) (value, mask uint32, ok bool) {
	v, m, hasMask := strings.Cut(spec, "/")
	vv, err := strconv.ParseUint(v, 0, 32)
	if err != nil {
		return 0, 0, false
	}
	mm := uint64(0xffffffff)
	if hasMask {
		if mm, err = strconv.ParseUint(m, 0, 32); err != nil {
			return 0, 0, false
		}
	}
	return uint32(vv), uint32(mm), true
}

func markMatch(mark uint32, spec string) bool {
	v, m, ok := parseMark(spec)
	return ok && mark&m == v
}

// ctStateMatch: the traced packet opens a connection, so its state is NEW, plus DNAT
// and SNAT once those have been applied to it.
func ctStateMatch(f *flow, spec string) bool {
	for _, s := range strings.Split(spec, ",") {
		switch strings.ToUpper(s) {
		case "NEW":
			return true
		case "DNAT":
			if f.dnat {
				return true
			}
		case "SNAT":
			if f.masq {
				return true
			}
		}
	}
	return false
}

func ctStatusMatch(f *flow, spec string) bool {
	for _, s := range strings.Split(spec, ",") {
		switch strings.ToUpper(s) {
		case "DNAT":
			if f.dnat {
				return true
			}
		case "SNAT":
			if f.masq {
				return true
			}
		}
	}
	return false
}
