package ipvs

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	libipvs "github.com/moby/ipvs"

	"github.com/kproxy/kproxy/internal/iptables"
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
	if _, dup := f.dests[k][destAddr(d)]; dup {
		return fmt.Errorf("file exists")
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
	if slices.Contains(l.addrs[name], a) {
		return nil // the kernel says EEXIST, which NetlinkLinks takes as done
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

// fakeIPSet holds sets and their members and applies "ipset restore -exist" input
// as the kernel does for what SetsRestore writes: create is a no-op for an existing
// set of the same type, adding a member twice keeps one, and adding to, swapping or
// flushing a missing set fails, as does destroying a set an iptables rule matches
// (inUse, when set, tells).
type fakeIPSet struct {
	sets     map[string][]string
	types    map[string]string
	restores int
	inUse    func(name string) bool
}

func (s *fakeIPSet) Restore(data []byte) error {
	if s.sets == nil {
		s.sets, s.types = map[string][]string{}, map[string]string{}
	}
	s.restores++
	for i, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if err := s.apply(strings.Fields(line)); err != nil {
			return fmt.Errorf("fake ipset restore: line %d (%s): %w", i+1, line, err)
		}
	}
	return nil
}

func (s *fakeIPSet) apply(w []string) error {
	if len(w) < 2 {
		return fmt.Errorf("no set named")
	}
	name := w[1]
	_, exists := s.sets[name]
	need := func(names ...string) error {
		for _, n := range names {
			if _, ok := s.sets[n]; !ok {
				return fmt.Errorf("the set %s does not exist", n)
			}
		}
		return nil
	}
	switch w[0] {
	case "create":
		if len(w) < 3 {
			return fmt.Errorf("create without a type")
		}
		if exists && s.types[name] != w[2] {
			return fmt.Errorf("set %s exists with type %s, not %s", name, s.types[name], w[2])
		}
		if !exists {
			s.sets[name], s.types[name] = []string{}, w[2]
		}
	case "flush":
		if err := need(name); err != nil {
			return err
		}
		s.sets[name] = []string{}
	case "add":
		if err := need(name); err != nil {
			return err
		}
		if len(w) != 3 {
			return fmt.Errorf("add needs one member")
		}
		if !slices.Contains(s.sets[name], w[2]) {
			s.sets[name] = append(s.sets[name], w[2])
		}
	case "swap":
		if len(w) != 3 {
			return fmt.Errorf("swap needs two sets")
		}
		if err := need(name, w[2]); err != nil {
			return err
		}
		if s.types[name] != s.types[w[2]] {
			return fmt.Errorf("sets %s and %s have different types", name, w[2])
		}
		s.sets[name], s.sets[w[2]] = s.sets[w[2]], s.sets[name]
	case "destroy":
		return s.Destroy(name)
	default:
		return fmt.Errorf("unknown command %q", w[0])
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

func (s *fakeIPSet) Destroy(name string) error {
	if _, ok := s.sets[name]; !ok {
		return fmt.Errorf("the set %s does not exist", name)
	}
	if s.inUse != nil && s.inUse(name) {
		return fmt.Errorf("set %s cannot be destroyed: it is in use by a kernel component", name)
	}
	delete(s.sets, name)
	delete(s.types, name)
	return nil
}

// ipsetInUse says whether a rule of the iptables fake matches the set.
func ipsetInUse(ipt *iptables.Fake) func(string) bool {
	return func(name string) bool {
		for _, table := range []string{"filter", "nat", "mangle", "raw"} {
			save, err := ipt.Save(table)
			if err == nil && strings.Contains(string(save), " --match-set "+name+" ") {
				return true
			}
		}
		return false
	}
}
