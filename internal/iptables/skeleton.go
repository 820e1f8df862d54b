package iptables

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"syscall"

	gnft "github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/google/nftables/xt"
	"k8s.io/klog/v2"

	"github.com/kproxy/kproxy/internal/model"
)

// builtinChains are the chains of the kernel's tables that kproxy puts jumps in.
var builtinChains = []string{"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}

// inSkeleton says whether an iptables-save line belongs to a table's skeleton: its
// chain declarations and the rules of its built-in chains. That is all a full sync
// needs to know (chains to delete, jumps to insert), and at 10,000 Services it is a
// few kilobytes of a dump of tens of megabytes.
func inSkeleton(line []byte) bool {
	if len(line) > 0 && line[0] == ':' {
		return true
	}
	if !bytes.HasPrefix(line, []byte("-A ")) {
		return false
	}
	for _, c := range builtinChains {
		if rest := line[3:]; len(rest) > len(c) && rest[len(c)] == ' ' && string(rest[:len(c)]) == c {
			return true
		}
	}
	return false
}

// skeletonOf keeps the skeleton of iptables-save output.
func skeletonOf(save []byte) []byte {
	var out []byte
	for line := range bytes.Lines(save) {
		if line = bytes.TrimSuffix(line, []byte("\n")); inSkeleton(line) {
			out = append(append(out, line...), '\n')
		}
	}
	return out
}

// SaveSkeleton reads the skeleton without holding the dump in memory: over netlink
// for iptables-nft, else streaming iptables-save's output.
func (r *execRunner) SaveSkeleton(table string) ([]byte, error) {
	if r.flavour == FlavourNFT {
		// iptables-nft's tables are nf_tables tables: netlink lists their chains and
		// the built-in chains' rules in milliseconds, where iptables-nft-save 1.8.9
		// needs minutes (and, without a raised stack limit, crashes) on a nat table
		// of 10,000 Services.
		conn, err := gnft.New()
		if err == nil {
			var skel []byte
			skel, err = nftSkeleton(conn, r.family, table)
			if err == nil {
				return skel, nil
			}
		}
		klog.V(2).InfoS("Cannot read the iptables-nft table over netlink; running iptables-save", "table", table, "err", err)
	}
	return r.saveSkeletonExec(table)
}

// nftSkeleton writes the skeleton of an iptables-nft table as iptables-save would:
// every chain declared, and the built-in chains' rules that jump to (or go to) a
// chain, with their comment, as "-A CHAIN [-m comment --comment C] -j TARGET". The
// other matches of those rules are left out: hasJump compares only chain, target and
// comment.
func nftSkeleton(conn *gnft.Conn, f model.Family, table string) ([]byte, error) {
	fam := gnft.TableFamilyIPv4
	if f == model.IPv6 {
		fam = gnft.TableFamilyIPv6
	}
	chains, err := conn.ListChainsOfTableFamily(fam)
	if err != nil {
		return nil, fmt.Errorf("listing %s chains: %w", f, err)
	}
	var out bytes.Buffer
	found := false
	for _, c := range chains {
		if c.Table == nil || c.Table.Name != table {
			continue
		}
		found = true
		fmt.Fprintf(&out, ":%s - [0:0]\n", c.Name)
	}
	if !found {
		return nil, nil // no such table yet: nothing to delete, every jump missing
	}
	for _, name := range builtinChains {
		rules, err := conn.GetRules(&gnft.Table{Name: table, Family: fam}, &gnft.Chain{Name: name})
		if errors.Is(err, syscall.ENOENT) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("listing %s %s %s: %w", f, table, name, err)
		}
		for _, r := range rules {
			if line, ok := jumpLine(name, r); ok {
				out.WriteString(line)
				out.WriteByte('\n')
			}
		}
	}
	return out.Bytes(), nil
}

// jumpLine renders a rule that jumps to a chain as a skeleton line.
func jumpLine(chain string, r *gnft.Rule) (string, bool) {
	verb, target, comment := "", "", ""
	for _, e := range r.Exprs {
		switch e := e.(type) {
		case *expr.Verdict:
			switch e.Kind {
			case expr.VerdictJump:
				verb, target = "-j", e.Chain
			case expr.VerdictGoto:
				verb, target = "-g", e.Chain
			}
		case *expr.Match:
			// "-m comment" kept as an xtables match: xt_comment_info is the text.
			if e.Name == "comment" {
				switch info := e.Info.(type) {
				case *xt.Comment:
					comment = string(*info)
				case *xt.Unknown:
					comment = string(bytes.TrimRight(*info, "\x00"))
				}
			}
		}
	}
	if c, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok && comment == "" {
		comment = c
	}
	if target == "" {
		return "", false
	}
	line := "-A " + chain
	if comment != "" {
		line += ` -m comment --comment "` + comment + `"`
	}
	return line + " " + verb + " " + target, true
}

func (r *execRunner) saveSkeletonExec(table string) ([]byte, error) {
	cmd := exec.Command(r.save, "-t", table)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s -t %s: %w", r.save, table, err)
	}
	var out []byte
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if inSkeleton(sc.Bytes()) {
			out = append(append(out, sc.Bytes()...), '\n')
		}
	}
	scanErr := sc.Err()
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("%s -t %s: %w: %s", r.save, table, err, bytes.TrimSpace(stderr.Bytes()))
	}
	if scanErr != nil {
		return nil, fmt.Errorf("%s -t %s: reading its output: %w", r.save, table, scanErr)
	}
	return out, nil
}
