package iptables

import (
	"errors"
	"os/exec"
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

// ensureJumps inserts each missing jump rule. Rules are prepended in reverse order so
// that on a clean node they end up in the listed order, ahead of other rules.
func ensureJumps(r Runner, js []jump) error {
	for i := len(js) - 1; i >= 0; i-- {
		j := js[i]
		if err := r.Run(append([]string{"-t", j.table, "-C", j.chain}, j.args...)...); err == nil {
			continue
		} else if !isNotFound(err) {
			return err
		}
		if err := r.Run(append([]string{"-t", j.table, "-I", j.chain}, j.args...)...); err != nil {
			return err
		}
	}
	return nil
}

// isNotFound tells "rule does not exist" (exit status 1) from real failures.
func isNotFound(err error) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee) && ee.ExitCode() == 1
}

// ensureCanaries creates the empty KUBE-PROXY-CANARY chains whose disappearance tells
// that someone flushed the tables.
func ensureCanaries(r Runner) error {
	for _, t := range []string{"mangle", "nat", "filter"} {
		if err := r.Run("-t", t, "-N", chainCanary); err != nil && !isNotFound(err) {
			return err
		}
	}
	return nil
}

// canaryPresent reports whether the mangle canary still exists.
func canaryPresent(r Runner) bool {
	return r.Run("-t", "mangle", "-S", chainCanary) == nil
}
