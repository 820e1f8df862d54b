package ipvs

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	libipvs "github.com/moby/ipvs"

	"github.com/kproxy/kproxy/internal/model"
)

// fakeHandle is an in-memory IPVS table.
type fakeHandle struct {
	services map[VSKey]*libipvs.Service
	dests    map[VSKey]map[netip.AddrPort]*libipvs.Destination
	config   *libipvs.Config
	// schedulers the fake kernel knows; nil means any.
	schedulers map[string]bool
	calls      []string
}

func newFakeHandle() *fakeHandle {
	return &fakeHandle{services: map[VSKey]*libipvs.Service{}, dests: map[VSKey]map[netip.AddrPort]*libipvs.Destination{}}
}

func (f *fakeHandle) key(s *libipvs.Service) VSKey {
	k, ok := keyOf(s)
	if !ok {
		panic("bad service address")
	}
	return k
}

func (f *fakeHandle) GetServices() ([]*libipvs.Service, error) {
	var out []*libipvs.Service
	for _, s := range f.services {
		c := *s
		c.Flags |= flagHashed
		out = append(out, &c)
	}
	return out, nil
}

func (f *fakeHandle) GetDestinations(s *libipvs.Service) ([]*libipvs.Destination, error) {
	k := f.key(s)
	if _, ok := f.services[k]; !ok {
		return nil, fmt.Errorf("no such service %s", k)
	}
	var out []*libipvs.Destination
	for _, d := range f.dests[k] {
		c := *d
		out = append(out, &c)
	}
	return out, nil
}

func (f *fakeHandle) NewService(s *libipvs.Service) error {
	k := f.key(s)
	if f.schedulers != nil && !f.schedulers[s.SchedName] {
		return fmt.Errorf("no such file or directory")
	}
	if _, ok := f.services[k]; ok {
		return fmt.Errorf("file exists")
	}
	c := *s
	f.services[k] = &c
	f.dests[k] = map[netip.AddrPort]*libipvs.Destination{}
	f.calls = append(f.calls, "NewService "+k.String())
	return nil
}

func (f *fakeHandle) UpdateService(s *libipvs.Service) error {
	k := f.key(s)
	if _, ok := f.services[k]; !ok {
		return fmt.Errorf("no such service")
	}
	c := *s
	f.services[k] = &c
	f.calls = append(f.calls, "UpdateService "+k.String())
	return nil
}

func (f *fakeHandle) DelService(s *libipvs.Service) error {
	k := f.key(s)
	if _, ok := f.services[k]; !ok {
		return fmt.Errorf("no such service")
	}
	delete(f.services, k)
	delete(f.dests, k)
	f.calls = append(f.calls, "DelService "+k.String())
	return nil
}

func (f *fakeHandle) NewDestination(s *libipvs.Service, d *libipvs.Destination) error {
	k := f.key(s)
	if _, ok := f.services[k]; !ok {
		return fmt.Errorf("no such service")
	}
	c := *d
	f.dests[k][destAddr(d)] = &c
	f.calls = append(f.calls, fmt.Sprintf("NewDestination %s %s w%d", k, destAddr(d), d.Weight))
	return nil
}

func (f *fakeHandle) UpdateDestination(s *libipvs.Service, d *libipvs.Destination) error {
	k := f.key(s)
	cur, ok := f.dests[k][destAddr(d)]
	if !ok {
		return fmt.Errorf("no such destination")
	}
	cur.Weight = d.Weight
	f.calls = append(f.calls, fmt.Sprintf("UpdateDestination %s %s w%d", k, destAddr(d), d.Weight))
	return nil
}

func (f *fakeHandle) DelDestination(s *libipvs.Service, d *libipvs.Destination) error {
	k := f.key(s)
	if _, ok := f.dests[k][destAddr(d)]; !ok {
		return fmt.Errorf("no such destination")
	}
	delete(f.dests[k], destAddr(d))
	f.calls = append(f.calls, fmt.Sprintf("DelDestination %s %s", k, destAddr(d)))
	return nil
}

func (f *fakeHandle) SetConfig(c *libipvs.Config) error { f.config = c; return nil }

// table renders the fake's state as "vs sched [persist T]: dest/weight ..." lines.
func (f *fakeHandle) table() string {
	var lines []string
	for k, s := range f.services {
		line := fmt.Sprintf("%s %s", k, s.SchedName)
		if s.Flags&flagPersistent != 0 {
			line += fmt.Sprintf(" persistent %d", s.Timeout)
		}
		var ds []string
		for ap, d := range f.dests[k] {
			ds = append(ds, fmt.Sprintf("%s/%d", ap, d.Weight))
		}
		sort.Strings(ds)
		lines = append(lines, line+": "+strings.Join(ds, " "))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// setConns sets a real server's connection counts, as traffic would.
func (f *fakeHandle) setConns(vs VSKey, ap netip.AddrPort, active, inactive int) {
	d := f.dests[vs][ap]
	d.ActiveConnections, d.InactiveConnections = active, inactive
}

// fakeLinks holds interfaces and their addresses.
type fakeLinks struct {
	addrs map[string][]netip.Addr
}

func newFakeLinks(node ...string) *fakeLinks {
	l := &fakeLinks{addrs: map[string][]netip.Addr{"eth0": nil, "lo": {netip.MustParseAddr("127.0.0.1")}}}
	for _, a := range node {
		l.addrs["eth0"] = append(l.addrs["eth0"], netip.MustParseAddr(a))
	}
	return l
}

func (l *fakeLinks) Exists(name string) bool { _, ok := l.addrs[name]; return ok }
func (l *fakeLinks) EnsureDummy(name string) error {
	if _, ok := l.addrs[name]; !ok {
		l.addrs[name] = nil
	}
	return nil
}
func (l *fakeLinks) DeleteLink(name string) (bool, error) {
	_, ok := l.addrs[name]
	delete(l.addrs, name)
	return ok, nil
}
func (l *fakeLinks) Addrs(name string, f model.Family) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, a := range l.addrs[name] {
		if model.FamilyOf(a) == f {
			out = append(out, a)
		}
	}
	return out, nil
}
func (l *fakeLinks) AddAddr(name string, a netip.Addr) error {
	if _, ok := l.addrs[name]; !ok {
		return fmt.Errorf("no interface %s", name)
	}
	l.addrs[name] = append(l.addrs[name], a)
	return nil
}
func (l *fakeLinks) DelAddr(name string, a netip.Addr) error {
	var keep []netip.Addr
	for _, x := range l.addrs[name] {
		if x != a {
			keep = append(keep, x)
		}
	}
	l.addrs[name] = keep
	return nil
}
func (l *fakeLinks) LocalAddrs(f model.Family, exclude string) ([]netip.Addr, error) {
	var out []netip.Addr
	for name := range l.addrs {
		if name != exclude {
			a, _ := l.Addrs(name, f)
			out = append(out, a...)
		}
	}
	return out, nil
}

// fakeIPSet applies restore input to in-memory sets, enough of ipset's language for
// what SetsRestore writes.
type fakeIPSet struct {
	sets     map[string][]string
	restores int
}

func (s *fakeIPSet) Restore(data []byte) error {
	if s.sets == nil {
		s.sets = map[string][]string{}
	}
	s.restores++
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		w := strings.Fields(line)
		switch w[0] {
		case "create":
			if _, ok := s.sets[w[1]]; !ok {
				s.sets[w[1]] = []string{}
			}
		case "flush":
			s.sets[w[1]] = []string{}
		case "add":
			s.sets[w[1]] = append(s.sets[w[1]], w[2])
		case "swap":
			s.sets[w[1]], s.sets[w[2]] = s.sets[w[2]], s.sets[w[1]]
		case "destroy":
			delete(s.sets, w[1])
		default:
			return fmt.Errorf("fake ipset: unknown command %q", line)
		}
	}
	return nil
}

func (s *fakeIPSet) Names() ([]string, error) {
	var out []string
	for n := range s.sets {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

func (s *fakeIPSet) Destroy(name string) error { delete(s.sets, name); return nil }

// fakeIPT keeps chains and the rules of built-in chains per table, enough for the
// restores, saves and -C/-I/-D/-N/-S runs this package makes.
type fakeIPT struct {
	restores [][]byte
	rules    map[string]bool // "table -A CHAIN args", args quoted as iptables-save does
	chains   map[string]bool // "table chain"
}

func newFakeIPT() *fakeIPT { return &fakeIPT{rules: map[string]bool{}, chains: map[string]bool{}} }

func (r *fakeIPT) Restore(data []byte) error {
	r.restores = append(r.restores, data)
	table := ""
	for _, line := range strings.Split(string(data), "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			table = line[1:]
		case strings.HasPrefix(line, ":"):
			r.chains[table+" "+strings.Fields(line[1:])[0]] = true
		case strings.HasPrefix(line, "-X "):
			delete(r.chains, table+" "+strings.TrimPrefix(line, "-X "))
		case strings.HasPrefix(line, "-I "):
			r.rules[table+" -A "+strings.TrimPrefix(line, "-I ")] = true
		}
	}
	return nil
}

func (r *fakeIPT) Save(table string) ([]byte, error) {
	var b strings.Builder
	b.WriteString("*" + table + "\n")
	for c := range r.chains {
		if t, name, _ := strings.Cut(c, " "); t == table {
			b.WriteString(":" + name + " - [0:0]\n")
		}
	}
	for rule := range r.rules {
		if t, rest, _ := strings.Cut(rule, " "); t == table {
			b.WriteString(rest + "\n")
		}
	}
	b.WriteString("COMMIT\n")
	return []byte(b.String()), nil
}

func (r *fakeIPT) Run(args ...string) error {
	table, op, chain := args[1], args[2], args[3]
	rule := table + " -A " + chain + " " + quoteArgs(args[4:])
	switch op {
	case "-C":
		if !r.rules[rule] {
			return exit1()
		}
	case "-I":
		r.rules[rule] = true
	case "-D":
		if !r.rules[rule] {
			return exit1()
		}
		delete(r.rules, rule)
	case "-N":
		if r.chains[table+" "+chain] {
			return exit1()
		}
		r.chains[table+" "+chain] = true
	case "-S":
		if !r.chains[table+" "+chain] {
			return exit1()
		}
	}
	return nil
}
