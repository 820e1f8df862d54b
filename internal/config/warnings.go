package config

import (
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"k8s.io/kube-proxy/config/v1alpha1"

	"github.com/kproxy/kproxy/internal/logging"
)

func unimplementedFlagWarning(name string) string {
	return fmt.Sprintf("flag --%s is accepted for kube-proxy compatibility but not implemented yet; ignored", name)
}

func unimplementedFieldWarning(path, field string) string {
	return fmt.Sprintf("config file %s: field %s is accepted for kube-proxy compatibility but not implemented yet; ignored", path, field)
}

// flagWarnings reports, once each, the flags the user set that will not take
// effect: unimplemented ones (and feature gates among gates kproxy does not act
// on), and (with --config) those kube-proxy itself ignores because the file
// replaces them.
func flagWarnings(fs *pflag.FlagSet, fromFile bool, mode string, gates map[string]bool) []string {
	var out []string
	for _, d := range flagTable {
		if !fs.Changed(d.name) {
			continue
		}
		switch {
		case fromFile && d.inConfig:
			out = append(out, fmt.Sprintf("flag --%s is ignored because --config is given: as in kube-proxy, the config file's value is used", d.name))
		case !d.implemented:
			out = append(out, unimplementedFlagWarning(d.name))
		case d.name == "healthz-port" || d.name == "metrics-port" || d.name == "proxy-port-range":
			out = append(out, fmt.Sprintf("flag --%s is deprecated (as in kube-proxy)", d.name))
		}
	}
	if fromFile {
		return out
	}
	if ignored := ignoredGates(gates); fs.Changed("feature-gates") && len(ignored) > 0 {
		out = append(out, fmt.Sprintf("flag --feature-gates: gates %s are accepted for kube-proxy compatibility but not implemented yet; ignored", strings.Join(ignored, ", ")))
	}
	// Flags that are implemented but that kube-proxy does not apply in the
	// chosen mode: say so rather than let the user believe they matter.
	modeBound := []struct {
		flag    string
		applies bool
		why     string
	}{
		{"iptables-sync-period", mode != "ipvs", "ipvs mode uses --ipvs-sync-period"},
		{"sync-period", mode != "ipvs", "ipvs mode uses --ipvs-sync-period"},
		{"iptables-min-sync-period", mode != "ipvs", "ipvs mode uses --ipvs-min-sync-period"},
		{"min-sync-period", mode != "ipvs", "ipvs mode uses --ipvs-min-sync-period"},
		{"ipvs-sync-period", mode == "ipvs", "only ipvs mode uses it"},
		{"ipvs-min-sync-period", mode == "ipvs", "only ipvs mode uses it"},
		{"ipvs-scheduler", mode == "ipvs", "only ipvs mode uses it"},
		{"ipvs-exclude-cidrs", mode == "ipvs", "only ipvs mode uses it"},
		{"ipvs-strict-arp", mode == "ipvs", "only ipvs mode uses it"},
		{"ipvs-tcp-timeout", mode == "ipvs", "only ipvs mode uses it"},
		{"ipvs-tcpfin-timeout", mode == "ipvs", "only ipvs mode uses it"},
		{"ipvs-udp-timeout", mode == "ipvs", "only ipvs mode uses it"},
		{"iptables-masquerade-bit", mode != "nftables", "nftables mode uses nftables.masqueradeBit (default 14), settable only in a --config file"},
	}
	for _, m := range modeBound {
		if fs.Changed(m.flag) && !m.applies {
			out = append(out, fmt.Sprintf("flag --%s has no effect in %s mode: %s", m.flag, mode, m.why))
		}
	}
	return out
}

// fieldWarnings reports the fields of a config file that kproxy does not
// implement yet and that are set to something other than their default.
func fieldWarnings(path string, kp *v1alpha1.KubeProxyConfiguration) []string {
	var fields []string
	add := func(cond bool, field string) {
		if cond {
			fields = append(fields, field)
		}
	}
	if gates := ignoredGates(kp.FeatureGates); len(gates) > 0 {
		fields = append(fields, "featureGates ("+strings.Join(gates, ", ")+")")
	}
	add(kp.ClientConnection.AcceptContentTypes != "", "clientConnection.acceptContentTypes")
	add(kp.BindAddressHardFail, "bindAddressHardFail")
	add(kp.ShowHiddenMetricsForVersion != "", "showHiddenMetricsForVersion")
	if kp.Mode != "ipvs" {
		// In ipvs mode these two give Config its sync periods.
		add(kp.IPVS.SyncPeriod.Duration != defaultSyncPeriod, "ipvs.syncPeriod")
		add(kp.IPVS.MinSyncPeriod.Duration != 0, "ipvs.minSyncPeriod")
	}
	add(kp.Winkernel.NetworkName != "", "winkernel.networkName")
	add(kp.Winkernel.SourceVip != "", "winkernel.sourceVip")
	add(kp.Winkernel.EnableDSR, "winkernel.enableDSR")
	add(kp.Winkernel.RootHnsEndpointName != "", "winkernel.rootHnsEndpointName")
	add(kp.Winkernel.ForwardHealthCheckVip, "winkernel.forwardHealthCheckVip")
	add(kp.WindowsRunAsService, "windowsRunAsService")
	add(*kp.OOMScoreAdj != defaultOOMScoreAdj, "oomScoreAdj")
	add(kp.PortRange != "", "portRange")

	out := make([]string, 0, len(fields))
	for _, f := range fields {
		out = append(out, unimplementedFieldWarning(path, f))
	}
	return out
}

// ignoredGates lists, sorted, the feature gates among gates that kproxy does not act
// on: all but the logging ones.
func ignoredGates(gates map[string]bool) []string {
	var out []string
	for g := range gates {
		if !logging.IsLoggingGate(g) {
			out = append(out, g)
		}
	}
	sort.Strings(out)
	return out
}
