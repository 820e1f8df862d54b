package iptables

import (
	"runtime"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/kproxy/kproxy/internal/nfacct"
)

// ensureNFAcct makes, in the named network namespace, the nfacct objects a ruleset
// built with Params.NFAcct counts in (cmd/kproxy makes them before the first sync).
// The thread that entered the namespace is returned to the original one before it is
// unlocked.
func ensureNFAcct(t *testing.T, ns string) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer func() { _ = orig.Close() }()
		h, err := netns.GetFromName(ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer func() { _ = h.Close() }()
		if err := netns.Set(h); err != nil {
			errc <- err
			return // stays locked: the thread dies with the goroutine
		}
		err = nfacct.Ensure(nfacct.CTStateInvalidDropped)
		if err == nil {
			err = nfacct.Ensure(nfacct.LocalhostNodePortsAccepted)
		}
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("nfacct objects in %s: %v", ns, err)
	}
}
