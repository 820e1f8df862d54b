package iptables

import (
	"errors"
	"os/exec"
	"strings"
)

// jump is a rule in a built-in chain that leads into one of ours.
type jump struct {
	table, chain string
	args         []string
}

var ctNew = []string{"-m", "conntrack", "--ctstate", "NEW"}

func commented(text string, rest ...string) []string {
	return append([]string{"-m", "comment", "--comment", text}, rest...)
}

// jumpRules are upstream's jump rules (reference 2.1), plus KUBE-FIREWALL's when this
// backend writes that chain (kubelet writes it on a real node; standalone there is none).
func jumpRules(withFirewall bool) []jump {
	js := []jump{
		{"filter", "INPUT", join(ctNew, commented("kubernetes load balancer firewall", "-j", chainProxyFirewall))},
		{"filter", "INPUT", commented("kubernetes health check service ports", "-j", chainNodePorts)},
		{"filter", "INPUT", join(ctNew, commented("kubernetes externally-visible service portals", "-j", chainExternalServices))},
		{"filter", "FORWARD", join(ctNew, commented("kubernetes load balancer firewall", "-j", chainProxyFirewall))},
		{"filter", "FORWARD", commented("kubernetes forwarding rules", "-j", chainForward)},
		{"filter", "FORWARD", join(ctNew, commented("kubernetes service portals", "-j", chainServices))},
		{"filter", "FORWARD", join(ctNew, commented("kubernetes externally-visible service portals", "-j", chainExternalServices))},
		{"filter", "OUTPUT", join(ctNew, commented("kubernetes load balancer firewall", "-j", chainProxyFirewall))},
		{"filter", "OUTPUT", join(ctNew, commented("kubernetes service portals", "-j", chainServices))},
		{"nat", "PREROUTING", commented("kubernetes service portals", "-j", chainServices)},
		{"nat", "OUTPUT", commented("kubernetes service portals", "-j", chainServices)},
		{"nat", "POSTROUTING", commented("kubernetes postrouting rules", "-j", chainPostrouting)},
	}
	if withFirewall {
		js = append(js,
			jump{"filter", "INPUT", []string{"-j", chainFirewall}},
			jump{"filter", "OUTPUT", []string{"-j", chainFirewall}})
	}
	return js
}

// missingJumps returns, as iptables-restore lines per table, the jump rules the saved
// tables lack: checked against one iptables-save per table instead of one
// "iptables -C" per rule, so a full sync (and the repair after a flush) stays one
// restore. They are inserted in reverse order so that on a clean node they end up in
// the listed order, ahead of other rules.
func missingJumps(js []jump, saved map[string][]byte) map[string][]string {
	out := map[string][]string{}
	for i := len(js) - 1; i >= 0; i-- {
		j := js[i]
		if hasJump(saved[j.table], j) {
			continue
		}
		out[j.table] = append(out[j.table], jumpRuleLine("-I", j))
	}
	return out
}

// jumpRuleLine renders the jump as an iptables-restore line with the given command (-I,
// -D), quoting arguments with spaces.
func jumpRuleLine(cmd string, j jump) string {
	words := make([]string, 0, len(j.args)+2)
	words = append(words, cmd, j.chain)
	for _, a := range j.args {
		if strings.ContainsAny(a, " \t") {
			a = `"` + a + `"`
		}
		words = append(words, a)
	}
	return strings.Join(words, " ")
}

// hasJump looks for the rule in iptables-save output: a rule of the same built-in
// chain with the same target and, when it has one, the same comment (iptables-save
// may print the matches in another order, so the rule text is not compared).
func hasJump(save []byte, j jump) bool { return countJumps(save, j) > 0 }

// countJumps counts the rules hasJump looks for: a rule inserted twice (by two
// versions, or by hand) is there twice.
func countJumps(save []byte, j jump) int {
	n := 0
	target := j.args[len(j.args)-1]
	comment := ""
	for i, a := range j.args {
		if a == "--comment" && i+1 < len(j.args) {
			comment = j.args[i+1]
		}
	}
	prefix := "-A " + j.chain + " "
	for line := range strings.Lines(string(save)) {
		line = strings.TrimSuffix(line, "\n")
		if !strings.HasPrefix(line, prefix) || !strings.HasSuffix(line, "-j "+target) {
			continue
		}
		if comment == "" || strings.Contains(line, `"`+comment+`"`) || strings.Contains(line, " "+comment+" ") {
			n++
		}
	}
	return n
}

// isExitStatus1 tells an iptables binary's "rule or chain does not exist" (exit status
// 1) from real failures; only the exec runner looks at exit statuses.
func isExitStatus1(err error) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee) && ee.ExitCode() == 1
}
