package iptables

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	gnft "github.com/google/nftables"

	"github.com/kproxy/kproxy/internal/model"
)

// The netlink skeleton of an iptables-nft table must tell the same chains and the
// same missing jumps as iptables-save does.
func TestNetlinkSkeletonAgreesWithIPTablesSave(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	if _, err := exec.LookPath("iptables-nft-restore"); err != nil {
		t.Skip("iptables-nft-restore is not installed")
	}
	ns := fmt.Sprintf("kpskel%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	ensureNFAcct(t, ns)
	r := nsRunner{ns: ns}
	fd, err := os.Open("/var/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = fd.Close() }()
	conn, err := gnft.New(gnft.WithNetNSFd(int(fd.Fd())))
	if err != nil {
		t.Fatal(err)
	}

	// Before anything exists: no chains, every jump missing, both ways.
	empty, err := nftSkeleton(conn, model.IPv4, "nat")
	if err != nil || len(empty) != 0 {
		t.Fatalf("skeleton of a namespace without a nat table: %q, %v", empty, err)
	}

	snap, _ := manyServices(100)
	js := jumpRules(true)
	rs := Build(BuildInput{Params: referenceParams(), Snapshot: snap, JumpRules: missingJumps(js, nil)})
	if err := r.Restore(rs.Data()); err != nil {
		t.Fatal(err)
	}
	// One jump removed behind kproxy's back.
	if out, err := r.cmd("iptables-nft", "-t", "nat", "-D", "OUTPUT", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES").CombinedOutput(); err != nil {
		t.Fatalf("deleting a jump: %v: %s", err, out)
	}
	for _, table := range []string{"filter", "nat"} {
		viaNetlink, err := nftSkeleton(conn, model.IPv4, table)
		if err != nil {
			t.Fatal(err)
		}
		viaSave, err := r.SaveSkeleton(table)
		if err != nil {
			t.Fatal(err)
		}
		// iptables-save also prints built-in chains nf_tables does not hold yet; the
		// full sync only looks at kproxy's own chains.
		own := func(skel []byte) []string {
			var out []string
			for _, c := range chainsIn(skel) {
				if strings.HasPrefix(c, "KUBE-") {
					out = append(out, c)
				}
			}
			slices.Sort(out)
			return out
		}
		a, b := own(viaNetlink), own(viaSave)
		if !slices.Equal(a, b) || len(a) < 5 {
			t.Errorf("%s: netlink lists %d chains, iptables-save %d", table, len(a), len(b))
		}
		mNetlink := missingJumps(js, map[string][]byte{table: viaNetlink})[table]
		mSave := missingJumps(js, map[string][]byte{table: viaSave})[table]
		if !slices.Equal(mNetlink, mSave) {
			t.Errorf("%s: missing jumps by netlink %q, by iptables-save %q", table, mNetlink, mSave)
		}
		if table == "nat" && (len(mNetlink) != 1 || !strings.HasPrefix(mNetlink[0], "-I OUTPUT ") || !strings.HasSuffix(mNetlink[0], "-j KUBE-SERVICES")) {
			t.Errorf("nat: missing jumps %q, want only OUTPUT's jump to KUBE-SERVICES", mNetlink)
		}
		if table == "filter" && len(mNetlink) != 0 {
			t.Errorf("filter: missing jumps %q, want none", mNetlink)
		}
	}
}
