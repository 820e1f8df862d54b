package scale

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
)

// Reading what the proxy put in node1's kernel. Both implementations use upstream's
// names (iptables "cluster IP" comments, the nftables table kube-proxy and its map
// service-ips), so one reader serves both.

var (
	destRE    = regexp.MustCompile(` -d ([0-9.]+)/32 `)
	nftElemRE = regexp.MustCompile(`([0-9]+\.[0-9]+\.[0-9]+\.[0-9]+) \. tcp \. 80 :`)
)

// kernel reads node1's rules through exec (ip netns exec).
type kernel struct {
	exec func(args ...string) (string, error)
}

// programmed counts the benchmark's ClusterIPs (ips) that have a dispatch rule:
// in iptables mode a nat rule with a "cluster IP" comment for that -d; in
// nftables mode an element of the service-ips map.
func (k kernel) programmed(mode string, ips map[string]bool) (int, error) {
	seen := map[string]bool{}
	switch mode {
	case ModeIPTables:
		out, err := k.exec("iptables-save", "-t", "nat")
		if err != nil {
			return 0, err
		}
		for _, line := range strings.Split(out, "\n") {
			if !strings.Contains(line, "cluster IP") {
				continue
			}
			if m := destRE.FindStringSubmatch(line); m != nil && ips[m[1]] {
				seen[m[1]] = true
			}
		}
	case ModeNFTables:
		out, err := k.exec("nft", "list", "map", "ip", "kube-proxy", "service-ips")
		if err != nil {
			if strings.Contains(err.Error(), "No such file") {
				return 0, nil // the table is not there yet
			}
			return 0, err
		}
		for _, m := range nftElemRE.FindAllStringSubmatch(out, -1) {
			if ips[m[1]] {
				seen[m[1]] = true
			}
		}
	}
	return len(seen), nil
}

// lastDispatch finds the Service whose ClusterIP dispatch rule comes last in the
// nat table, in iptables-save order: the rule a new connection to it reaches last
// if the table is walked linearly (upstream's KUBE-SERVICES). It returns its
// ClusterIP, the chain holding the rule, the rule's position in that chain (1-based)
// and the chain's length. Masquerade rules (KUBE-MARK-MASQ) also carry the "cluster
// IP" comment and are skipped.
func lastDispatch(natDump string, ips map[string]bool) (ip, chain string, pos, chainLen int) {
	count := map[string]int{}
	for _, line := range strings.Split(natDump, "\n") {
		if !strings.HasPrefix(line, "-A ") {
			continue
		}
		c := strings.Fields(line)[1]
		count[c]++
		if !strings.Contains(line, "cluster IP") || strings.Contains(line, "KUBE-MARK-MASQ") {
			continue
		}
		if m := destRE.FindStringSubmatch(line); m != nil && ips[m[1]] {
			ip, chain, pos = m[1], c, count[c]
		}
	}
	return ip, chain, pos, count[chain]
}

// rulesetSize describes the size of the proxy's ruleset: iptables rules (all
// tables, IPv4) or nftables rules and set/map elements of table ip kube-proxy.
type rulesetSize struct {
	Rules    int
	Elements int // nftables only
	Chains   int
}

func (r rulesetSize) String() string {
	if r.Elements > 0 {
		return fmt.Sprintf("%d rules + %d elements", r.Rules, r.Elements)
	}
	return fmt.Sprintf("%d rules", r.Rules)
}

func (k kernel) size(mode string) (rulesetSize, error) {
	var s rulesetSize
	if mode == ModeIPTables {
		out, err := k.exec("iptables-save")
		if err != nil {
			return s, err
		}
		for _, line := range strings.Split(out, "\n") {
			switch {
			case strings.HasPrefix(line, "-A "):
				s.Rules++
			case strings.HasPrefix(line, ":KUBE-"):
				s.Chains++
			}
		}
		return s, nil
	}
	out, err := k.exec("nft", "-j", "list", "table", "ip", "kube-proxy")
	if err != nil {
		return s, err
	}
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return s, fmt.Errorf("bench: nft -j output: %w", err)
	}
	for _, obj := range doc.Nftables {
		if _, ok := obj["rule"]; ok {
			s.Rules++
		}
		if _, ok := obj["chain"]; ok {
			s.Chains++
		}
		for _, kind := range []string{"set", "map"} {
			raw, ok := obj[kind]
			if !ok {
				continue
			}
			var set struct {
				Elem []json.RawMessage `json:"elem"`
			}
			if err := json.Unmarshal(raw, &set); err == nil {
				s.Elements += len(set.Elem)
			}
		}
	}
	return s, nil
}

// leftovers lists what a proxy left in node1: KUBE-* chains in iptables or
// ip6tables, and nftables tables named kube-proxy. Empty means clean.
func (k kernel) leftovers() ([]string, error) {
	var left []string
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		out, err := k.exec(save)
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, ":KUBE-") || (strings.HasPrefix(line, "-A ") && strings.Contains(line, "KUBE-")) {
				left = append(left, save+": "+line)
			}
		}
	}
	out, err := k.exec("nft", "list", "tables")
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "kube-proxy") {
			left = append(left, "nft: "+strings.TrimSpace(line))
		}
	}
	return left, nil
}
