package iptables

import (
	"errors"
	"strings"
	"testing"

	"github.com/kproxy/kproxy/internal/model"
)

// runFakeCase plays a case on a runner and checks each step's outcome and the tables
// it leaves; notFound tells whether a failed run said "no such rule or chain".
func runFakeCase(t *testing.T, c fakeCase, r Runner, notFound func(error) bool) {
	t.Helper()
	for i, s := range c.steps {
		var err error
		if s.run != nil {
			err = r.Run(s.run...)
		} else {
			err = r.Restore([]byte(s.restore))
		}
		if (err != nil) != s.fails {
			t.Errorf("step %d: error %v, want failure %v", i+1, err, s.fails)
		}
		if err != nil && s.notFound && !notFound(err) {
			t.Errorf("step %d: error %v, want a not-found error", i+1, err)
		}
	}
	for table, want := range c.want {
		save, err := r.Save(table)
		if err != nil {
			t.Fatalf("save %s: %v", table, err)
		}
		if got := normalizeSave(string(save), table); got != want {
			t.Errorf("table %s:\n%s\nwant:\n%s", table, got, want)
		}
	}
}

// normalizeSave drops iptables-save's "#" lines; a table that does not exist yet
// (iptables-nft makes tables on first use) reads as the empty table.
func normalizeSave(save, table string) string {
	var out []string
	for _, l := range strings.Split(save, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		fk := NewFake(model.IPv4)
		empty, _ := fk.Save(table)
		return string(empty)
	}
	return strings.Join(out, "\n") + "\n"
}

func TestFakeBehavesLikeTheKernel(t *testing.T) {
	for _, c := range fakeCases {
		t.Run(c.name, func(t *testing.T) {
			f := c.family
			if f == 0 {
				f = model.IPv4
			}
			runFakeCase(t, c, NewFake(f), func(err error) bool { return errors.Is(err, ErrNotFound) })
		})
	}
}

// Errors say what failed and where: the input line and the reason.
func TestFakeErrorsNameTheLine(t *testing.T) {
	fk := NewFake(model.IPv4)
	err := fk.Restore([]byte("*filter\n:A - [0:0]\n-A A -j KUBE-NOPE\nCOMMIT\n"))
	if err == nil || !strings.Contains(err.Error(), "line 3") || !strings.Contains(err.Error(), "KUBE-NOPE") {
		t.Errorf("error %v: want the line number and the missing chain", err)
	}
	err = fk.Restore([]byte("*nat\n:A - [0:0]\n-A A -p tcp -j DNAT --to-destination 1.2.3.4:80\n-A POSTROUTING -j A\nCOMMIT\n"))
	if err == nil || !strings.Contains(err.Error(), "COMMIT of table nat") || !strings.Contains(err.Error(), "POSTROUTING") {
		t.Errorf("error %v: want the COMMIT and the hook", err)
	}
}

// The fake answers the flush check from its chains.
func TestFakeChainsFlushed(t *testing.T) {
	fk := NewFake(model.IPv4)
	probes := []ChainProbe{{"mangle", chainCanary, false}, {"nat", chainMarkMasq, true}}
	if !fk.ChainsFlushed(probes) {
		t.Errorf("missing chains not seen as flushed")
	}
	if err := fk.Restore([]byte("*mangle\n:" + chainCanary + " - [0:0]\nCOMMIT\n*nat\n:" + chainMarkMasq + " - [0:0]\n-A " + chainMarkMasq + " -j MARK --or-mark 0x4000\nCOMMIT\n")); err != nil {
		t.Fatal(err)
	}
	if fk.ChainsFlushed(probes) {
		t.Errorf("present chains seen as flushed")
	}
	if err := fk.Run("-t", "nat", "-F", chainMarkMasq); err != nil {
		t.Fatal(err)
	}
	if !fk.ChainsFlushed(probes) {
		t.Errorf("an emptied chain that needs rules not seen as flushed")
	}
}
