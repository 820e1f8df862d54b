package iptables

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/kproxy/kproxy/internal/model"
)

// This file gives Fake its rule language: a rule specification ("-m tcp -p tcp -d
// 10.0.0.1 --dport 80 -j KUBE-SVC-X") is parsed and printed back the way iptables-save
// (1.8, both flavours) prints it, so that the fake's dump reads like the kernel's and a
// rule compares equal to the same rule written in another order (for -D and -C). It
// knows the matches and targets kube-proxy rulesets use; other modules are kept as
// written. fake_kernel_test.go checks the printing against the real binaries.

// ruleSpec is one parsed rule.
type ruleSpec struct {
	src, dst, in, out, proto addrOpt
	matches                  []matchSpec
	target                   string
	isGoto                   bool
	targetOpts               []optSpec
}

// addrOpt is one of the built-in matches (-s, -d, -i, -o, -p): its printed value.
type addrOpt struct {
	neg bool
	val string
}

type matchSpec struct {
	name string
	opts []optSpec
}

type optSpec struct {
	neg  bool
	name string
	vals []string
}

// moduleOptions are the options of the matches and targets the fake knows, with the
// number of values each takes; an option of a known module that is not listed is an
// error, as iptables refuses it. Modules not listed take any option.
var moduleOptions = map[string]map[string]int{
	"comment":   {"--comment": 1},
	"tcp":       {"--sport": 1, "--dport": 1, "--syn": 0, "--tcp-flags": 2},
	"udp":       {"--sport": 1, "--dport": 1},
	"sctp":      {"--sport": 1, "--dport": 1},
	"conntrack": {"--ctstate": 1, "--ctstatus": 1, "--ctorigdst": 1, "--ctorigdstport": 1, "--ctdir": 1},
	"mark":      {"--mark": 1},
	"addrtype":  {"--src-type": 1, "--dst-type": 1, "--limit-iface-in": 0, "--limit-iface-out": 0},
	"statistic": {"--mode": 1, "--probability": 1, "--every": 1, "--packet": 1},
	"recent": {"--set": 0, "--rcheck": 0, "--update": 0, "--remove": 0, "--seconds": 1, "--reap": 0,
		"--hitcount": 1, "--rttl": 0, "--name": 1, "--mask": 1, "--rsource": 0, "--rdest": 0},
	"set":        {"--match-set": 2},
	"nfacct":     {"--nfacct-name": 1},
	"MARK":       {"--set-xmark": 1, "--set-mark": 1, "--or-mark": 1, "--xor-mark": 1, "--and-mark": 1},
	"DNAT":       {"--to-destination": 1, "--random": 0, "--persistent": 0},
	"SNAT":       {"--to-source": 1, "--random": 0, "--random-fully": 0, "--persistent": 0},
	"MASQUERADE": {"--to-ports": 1, "--random": 0, "--random-fully": 0},
	"REJECT":     {"--reject-with": 1},
	"ACCEPT":     {}, "DROP": {}, "RETURN": {},
}

// optionAliases are long spellings iptables-save prints short.
var optionAliases = map[string]string{"--source-port": "--sport", "--destination-port": "--dport"}

var protocolNames = map[string]string{"6": "tcp", "17": "udp", "132": "sctp", "1": "icmp", "58": "ipv6-icmp"}

// parseRuleSpec parses the words of a rule after "-A CHAIN" for family f.
func parseRuleSpec(f model.Family, w []string) (*ruleSpec, error) {
	r := &ruleSpec{}
	cur := -1 // the match the next module option belongs to
	for i := 0; i < len(w); i++ {
		neg := false
		if w[i] == "!" {
			neg = true
			if i++; i == len(w) {
				return nil, fmt.Errorf("%q at the end of the rule", "!")
			}
		}
		opt := w[i]
		val := func() (string, error) {
			if i+1 >= len(w) {
				return "", fmt.Errorf("option %s needs a value", opt)
			}
			i++
			return w[i], nil
		}
		var err error
		switch opt {
		case "-s", "--source", "-d", "--destination":
			var v string
			if v, err = val(); err == nil {
				var a addrOpt
				if a, err = parseAddrOpt(f, v, neg); err == nil && (opt == "-s" || opt == "--source") {
					r.src = a
				} else if err == nil {
					r.dst = a
				}
			}
		case "-i", "--in-interface", "-o", "--out-interface":
			var v string
			if v, err = val(); err == nil {
				if opt == "-i" || opt == "--in-interface" {
					r.in = addrOpt{neg, v}
				} else {
					r.out = addrOpt{neg, v}
				}
			}
		case "-p", "--protocol":
			var v string
			if v, err = val(); err == nil {
				v = strings.ToLower(v)
				if n, ok := protocolNames[v]; ok {
					v = n
				}
				r.proto = addrOpt{neg, v}
			}
		case "-m", "--match":
			var v string
			if v, err = val(); err == nil {
				r.matches = append(r.matches, matchSpec{name: v})
				cur = len(r.matches) - 1
			}
		case "-j", "--jump", "-g", "--goto":
			var v string
			if v, err = val(); err == nil {
				r.target, r.isGoto = v, opt == "-g" || opt == "--goto"
				r.targetOpts, err = parseOpts(r.target, w[i+1:])
				i = len(w)
			}
		default:
			err = r.addModuleOption(w, &i, &cur, neg)
		}
		if err != nil {
			return nil, err
		}
	}
	return r, r.validate()
}

// addModuleOption gives option w[*i] to the match that takes it: the current one, or
// for a port option the protocol's match, loaded implicitly as iptables does.
func (r *ruleSpec) addModuleOption(w []string, i *int, cur *int, neg bool) error {
	name := w[*i]
	if canon, ok := optionAliases[name]; ok {
		name = canon
	}
	if !strings.HasPrefix(name, "-") {
		return fmt.Errorf("unexpected %q", name)
	}
	owner := -1
	if *cur >= 0 && takesOption(r.matches[*cur].name, name) {
		owner = *cur
	} else if proto := r.proto.val; (name == "--dport" || name == "--sport") && !r.proto.neg && takesOption(proto, name) {
		owner = slices.IndexFunc(r.matches, func(m matchSpec) bool { return m.name == proto })
		if owner < 0 {
			r.matches = append(r.matches, matchSpec{name: proto})
			owner = len(r.matches) - 1
			*cur = owner
		}
	}
	if owner < 0 {
		return fmt.Errorf("unknown option %q", name)
	}
	o := optSpec{neg: neg, name: name}
	o.vals, *i = takeOptValues(r.matches[owner].name, name, w, *i)
	r.matches[owner].opts = append(r.matches[owner].opts, o)
	return nil
}

// takesOption says whether a module accepts an option; unknown modules accept any.
func takesOption(module, opt string) bool {
	known, ok := moduleOptions[module]
	if !ok {
		return module != "" && module != "all"
	}
	_, ok = known[opt]
	return ok
}

// takeOptValues returns the values of option w[i] of a module and the index of the last.
func takeOptValues(module, opt string, w []string, i int) ([]string, int) {
	n, known := moduleOptions[module][opt]
	var vals []string
	for j := 0; (known && j < n) || (!known && i+1 < len(w) && w[i+1] != "!" && !strings.HasPrefix(w[i+1], "-")); j++ {
		if i+1 >= len(w) {
			break
		}
		i++
		vals = append(vals, w[i])
	}
	return vals, i
}

func parseOpts(module string, w []string) ([]optSpec, error) {
	var out []optSpec
	for i := 0; i < len(w); i++ {
		neg := w[i] == "!"
		if neg {
			i++
		}
		if i >= len(w) || !strings.HasPrefix(w[i], "-") {
			return nil, fmt.Errorf("unexpected %q after target %s", strings.Join(w, " "), module)
		}
		if _, known := moduleOptions[module]; known && !takesOption(module, w[i]) {
			return nil, fmt.Errorf("target %s has no option %s", module, w[i])
		}
		o := optSpec{neg: neg, name: w[i]}
		o.vals, i = takeOptValues(module, w[i], w, i)
		out = append(out, o)
	}
	return out, nil
}

// parseAddrOpt reads "IP", "IP/len" or "IP/mask" as iptables prints it: the address
// masked, a contiguous mask as a length, others as an address.
func parseAddrOpt(f model.Family, s string, neg bool) (addrOpt, error) {
	bad := fmt.Errorf("host/network %q not found", s)
	addr, mask, hasMask := strings.Cut(s, "/")
	a, err := netip.ParseAddr(addr)
	if err != nil || model.FamilyOf(a) != f || (f == model.IPv4 && !a.Is4()) {
		return addrOpt{}, bad
	}
	bitLen := a.BitLen()
	if !hasMask {
		return addrOpt{neg, netip.PrefixFrom(a, bitLen).String()}, nil
	}
	if n, err := strconv.Atoi(mask); err == nil {
		if n < 0 || n > bitLen {
			return addrOpt{}, bad
		}
		return addrOpt{neg, netip.PrefixFrom(a, n).Masked().String()}, nil
	}
	m, err := netip.ParseAddr(mask)
	if err != nil || m.BitLen() != bitLen {
		return addrOpt{}, bad
	}
	ab, mb := a.AsSlice(), m.AsSlice()
	ones := 0
	for i := range ab {
		ab[i] &= mb[i]
		ones += bits.OnesCount8(mb[i])
	}
	contiguous := true
	for i := range mb {
		want := byte(0xff)
		if left := ones - 8*i; left < 8 {
			want = byte(0xff << (8 - max(left, 0)))
		}
		contiguous = contiguous && mb[i] == want
	}
	masked, _ := netip.AddrFromSlice(ab)
	if contiguous {
		return addrOpt{neg, netip.PrefixFrom(masked, ones).String()}, nil
	}
	return addrOpt{neg, masked.String() + "/" + m.String()}, nil
}

// validate refuses what iptables refuses of a rule on its own.
func (r *ruleSpec) validate() error {
	for _, m := range r.matches {
		if (m.name == "tcp" || m.name == "udp" || m.name == "sctp") && (r.proto.val != m.name || r.proto.neg) {
			return fmt.Errorf("match %s needs -p %s", m.name, m.name)
		}
	}
	for _, o := range r.targetOpts {
		if (o.name == "--to-destination" || o.name == "--to-source") && len(o.vals) == 1 && hasPort(o.vals[0]) &&
			r.proto.val != "tcp" && r.proto.val != "udp" && r.proto.val != "sctp" {
			return errors.New("need TCP, UDP, SCTP or DCCP with port specification")
		}
	}
	return nil
}

// hasPort says whether a NAT address ("1.2.3.4:80", "[fd00::1]:80") names a port.
func hasPort(s string) bool {
	if strings.HasPrefix(s, "[") {
		return strings.Contains(s, "]:")
	}
	return strings.Count(s, ":") == 1
}

// String prints the rule as iptables-save does after "-A CHAIN ".
func (r *ruleSpec) String(f model.Family) string {
	var w []string
	builtin := func(flag string, a addrOpt) {
		if a.val == "" {
			return
		}
		if a.neg {
			w = append(w, "!")
		}
		w = append(w, flag, a.val)
	}
	builtin("-s", r.src)
	builtin("-d", r.dst)
	builtin("-i", r.in)
	builtin("-o", r.out)
	builtin("-p", r.proto)
	for _, m := range r.matches {
		w = append(w, "-m", m.name)
		w = appendOpts(w, canonicalMatchOpts(f, m))
	}
	if r.target != "" {
		verb := "-j"
		if r.isGoto {
			verb = "-g"
		}
		w = append(w, verb, r.target)
		w = appendOpts(w, canonicalTargetOpts(f, r.target, r.targetOpts))
	}
	return strings.Join(w, " ")
}

func appendOpts(w []string, opts []optSpec) []string {
	for _, o := range opts {
		if o.neg {
			w = append(w, "!")
		}
		w = append(w, o.name)
		w = append(w, o.vals...)
	}
	return w
}

// ctstateOrder is the order iptables prints conntrack states in.
var ctstateOrder = []string{"INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED", "SNAT", "DNAT"}

func canonicalMatchOpts(f model.Family, m matchSpec) []optSpec {
	opts := slices.Clone(m.opts)
	switch m.name {
	case "comment":
		for i := range opts {
			if len(opts[i].vals) == 1 {
				opts[i].vals = []string{saveString(opts[i].vals[0])}
			}
		}
	case "tcp", "udp", "sctp":
		slices.SortStableFunc(opts, func(a, b optSpec) int {
			return optRank(a.name, "--sport", "--dport") - optRank(b.name, "--sport", "--dport")
		})
	case "conntrack":
		for i := range opts {
			if opts[i].name == "--ctstate" && len(opts[i].vals) == 1 {
				states := strings.Split(strings.ToUpper(opts[i].vals[0]), ",")
				slices.SortFunc(states, func(a, b string) int { return slices.Index(ctstateOrder, a) - slices.Index(ctstateOrder, b) })
				opts[i].vals = []string{strings.Join(states, ",")}
			}
		}
	case "statistic":
		for i := range opts {
			if opts[i].name == "--probability" && len(opts[i].vals) == 1 {
				// xt_statistic keeps the probability as a fraction of 2^31 (libxt_statistic
				// parses it with lround) and prints that fraction back.
				if p, err := strconv.ParseFloat(opts[i].vals[0], 64); err == nil {
					opts[i].vals = []string{fmt.Sprintf("%.11f", math.Round(p*0x80000000)/0x80000000)}
				}
			}
		}
	case "recent":
		return canonicalRecent(f, opts)
	}
	return opts
}

// canonicalRecent orders the recent match's options as it prints them, with its
// defaults (name DEFAULT, the family's full mask, --rsource) written out.
func canonicalRecent(f model.Family, opts []optSpec) []optSpec {
	byName := map[string]optSpec{}
	for _, o := range opts {
		byName[o.name] = o
	}
	if _, ok := byName["--name"]; !ok {
		byName["--name"] = optSpec{name: "--name", vals: []string{"DEFAULT"}}
	}
	if _, ok := byName["--mask"]; !ok {
		mask := "255.255.255.255"
		if f == model.IPv6 {
			mask = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
		}
		byName["--mask"] = optSpec{name: "--mask", vals: []string{mask}}
	}
	if _, ok := byName["--rdest"]; !ok {
		byName["--rsource"] = optSpec{name: "--rsource"}
	}
	var out []optSpec
	for _, n := range []string{"--set", "--rcheck", "--update", "--remove", "--seconds", "--reap", "--hitcount", "--rttl", "--name", "--mask", "--rsource", "--rdest"} {
		if o, ok := byName[n]; ok {
			out = append(out, o)
		}
	}
	return out
}

func canonicalTargetOpts(f model.Family, target string, opts []optSpec) []optSpec {
	switch target {
	case "MARK":
		out := slices.Clone(opts)
		for i, o := range out {
			if len(o.vals) == 1 {
				out[i] = optSpec{name: "--set-xmark", vals: []string{xmark(o.name, o.vals[0])}}
			}
		}
		return out
	case "REJECT":
		if len(opts) == 0 {
			with := "icmp-port-unreachable"
			if f == model.IPv6 {
				with = "icmp6-port-unreachable"
			}
			return []optSpec{{name: "--reject-with", vals: []string{with}}}
		}
	}
	return opts
}

// xmark is a MARK option as the --set-xmark value/mask iptables stores it as.
func xmark(opt, v string) string {
	val, mask, hasMask := strings.Cut(v, "/")
	n, err1 := strconv.ParseUint(val, 0, 32)
	m := uint64(0xffffffff)
	var err2 error
	if hasMask {
		m, err2 = strconv.ParseUint(mask, 0, 32)
	}
	if err1 != nil || err2 != nil {
		return v
	}
	switch opt {
	case "--set-mark":
		return fmt.Sprintf("0x%x/0x%x", n, m)
	case "--or-mark":
		return fmt.Sprintf("0x%x/0x%x", n, n)
	case "--xor-mark":
		return fmt.Sprintf("0x%x/0x0", n)
	case "--and-mark":
		return fmt.Sprintf("0x0/0x%x", ^uint32(n))
	}
	return fmt.Sprintf("0x%x/0x%x", n, m)
}

func optRank(name string, order ...string) int {
	if i := slices.Index(order, name); i >= 0 {
		return i
	}
	return len(order)
}

// saveString quotes a value as iptables-save does (xtables_save_string): bare when it
// is only letters, digits, '-' and '_', else in double quotes with '"', '\' and '\”
// escaped.
func saveString(s string) string {
	bare := s != ""
	for _, c := range s {
		if c != '-' && c != '_' && (c < '0' || c > '9') && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') {
			bare = false
			break
		}
	}
	if bare {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range s {
		if c == '"' || c == '\\' || c == '\'' {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	b.WriteByte('"')
	return b.String()
}
