package config

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/kube-proxy/config/v1alpha1"
)

// Valid values of mode and detectLocalMode. Upstream no longer has userspace;
// kproxy keeps the name valid, as the issue asks.
var (
	validModes            = []string{"iptables", "nftables", "ipvs", "userspace"}
	validDetectLocalModes = []string{"ClusterCIDR", "NodeCIDR", "BridgeInterface", "InterfaceNamePrefix"}
	nodePortKeywords      = []string{"primary", "localhost", "all"}
)

// validator checks the effective configuration as upstream's validation does
// (K/pkg/proxy/apis/config/validation), plus kproxy's own flags. Each error
// names where the value came from: the flag, or the field of the --config file.
type validator struct {
	configFile string // "" when the values came from flags
	fs         *pflag.FlagSet
	errs       []error
}

// fail records that value, given by config field or by flag, is wrong.
// Values with no flag pass flag "", values with no field pass field "".
func (v *validator) fail(field, flag string, value any, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	val := fmt.Sprint(value)
	if d, ok := value.(time.Duration); ok {
		val = d.String()
	}
	switch {
	case v.configFile != "" && field != "":
		v.errs = append(v.errs, fmt.Errorf("config file %s: invalid %s %q: %s", v.configFile, field, val, msg))
	case flag != "":
		v.errs = append(v.errs, fmt.Errorf("invalid --%s %q: %s", flag, val, msg))
	default:
		v.errs = append(v.errs, fmt.Errorf("invalid %s %q: %s", field, val, msg))
	}
}

// usedFlag returns alias when the user spelled the flag that way, so that
// errors repeat what was typed.
func (v *validator) usedFlag(name, alias string) string {
	if v.fs.Changed(alias) && !v.fs.Changed(name) {
		return alias
	}
	return name
}

func (v *validator) validateKubeProxy(kp *v1alpha1.KubeProxyConfiguration) {
	mode := string(kp.Mode)
	if !contains(validModes, mode) {
		v.fail("mode", "proxy-mode", mode, "must be one of %s", strings.Join(validModes, ", "))
	}

	syncField, minField := "iptables.syncPeriod", "iptables.minSyncPeriod"
	syncFlag := v.usedFlag("iptables-sync-period", "sync-period")
	minFlag := v.usedFlag("iptables-min-sync-period", "min-sync-period")
	switch mode {
	case "nftables":
		syncField, minField = "nftables.syncPeriod", "nftables.minSyncPeriod"
	case "ipvs":
		syncField, minField = "ipvs.syncPeriod", "ipvs.minSyncPeriod"
		syncFlag, minFlag = "ipvs-sync-period", "ipvs-min-sync-period"
	}
	syncPeriod, minSyncPeriod := modeSyncPeriods(kp)
	if syncPeriod <= 0 {
		v.fail(syncField, syncFlag, syncPeriod, "must be greater than 0")
	}
	if minSyncPeriod < 0 {
		v.fail(minField, minFlag, minSyncPeriod, "must not be negative")
	} else if syncPeriod > 0 && minSyncPeriod > syncPeriod {
		v.fail(minField, minFlag, minSyncPeriod, "must not be greater than the sync period %s", syncPeriod)
	}
	if kp.ConfigSyncPeriod.Duration <= 0 {
		v.fail("configSyncPeriod", "config-sync-period", kp.ConfigSyncPeriod.Duration, "must be greater than 0")
	}

	if b := *kp.IPTables.MasqueradeBit; b < 0 || b > 31 {
		v.fail("iptables.masqueradeBit", "iptables-masquerade-bit", b, "must be within [0, 31]")
	}
	if b := *kp.NFTables.MasqueradeBit; b < 0 || b > 31 {
		v.fail("nftables.masqueradeBit", "", b, "must be within [0, 31]")
	}
	if a := *kp.OOMScoreAdj; a < -1000 || a > 1000 {
		v.fail("oomScoreAdj", "oom-score-adj", a, "must be within [-1000, 1000]")
	}
	v.validateConntrack(&kp.Conntrack)
	if kp.ClientConnection.Burst < 0 {
		v.fail("clientConnection.burst", "kube-api-burst", kp.ClientConnection.Burst, "must not be negative")
	}

	v.validateBindAddress(kp.BindAddress)
	v.validateHostPort("healthzBindAddress", "healthz-bind-address", kp.HealthzBindAddress)
	v.validateHostPort("metricsBindAddress", "metrics-bind-address", kp.MetricsBindAddress)
	v.validateNodePortAddresses(kp.NodePortAddresses)
	if _, err := parseDualStackCIDRs(kp.ClusterCIDR); err != nil {
		v.fail("clusterCIDR", "cluster-cidr", kp.ClusterCIDR, "%v", err)
	}
	v.validateDetectLocal(kp)
	for _, c := range kp.IPVS.ExcludeCIDRs {
		if _, err := parsePrefixSloppy(c); err != nil {
			v.fail("ipvs.excludeCIDRs", "ipvs-exclude-cidrs", c, "%v", err)
		}
	}
	for _, t := range []struct {
		field, flag string
		d           time.Duration
	}{
		{"ipvs.tcpTimeout", "ipvs-tcp-timeout", kp.IPVS.TCPTimeout.Duration},
		{"ipvs.tcpFinTimeout", "ipvs-tcpfin-timeout", kp.IPVS.TCPFinTimeout.Duration},
		{"ipvs.udpTimeout", "ipvs-udp-timeout", kp.IPVS.UDPTimeout.Duration},
	} {
		if t.d < 0 {
			v.fail(t.field, t.flag, t.d, "must not be negative")
		}
	}
}

func (v *validator) validateConntrack(c *v1alpha1.KubeProxyConntrackConfiguration) {
	if *c.MaxPerCore < 0 {
		v.fail("conntrack.maxPerCore", "conntrack-max-per-core", *c.MaxPerCore, "must not be negative")
	}
	if *c.Min < 0 {
		v.fail("conntrack.min", "conntrack-min", *c.Min, "must not be negative")
	}
	for _, t := range []struct {
		field, flag string
		d           time.Duration
	}{
		{"conntrack.tcpEstablishedTimeout", "conntrack-tcp-timeout-established", c.TCPEstablishedTimeout.Duration},
		{"conntrack.tcpCloseWaitTimeout", "conntrack-tcp-timeout-close-wait", c.TCPCloseWaitTimeout.Duration},
		{"conntrack.udpTimeout", "conntrack-udp-timeout", c.UDPTimeout.Duration},
		{"conntrack.udpStreamTimeout", "conntrack-udp-timeout-stream", c.UDPStreamTimeout.Duration},
	} {
		if t.d < 0 {
			v.fail(t.field, t.flag, t.d, "must not be negative")
		}
	}
}

// validateBindAddress: one IP, or (from a file) a comma-separated dual-stack pair.
func (v *validator) validateBindAddress(s string) {
	parts := strings.Split(s, ",")
	if len(parts) > 2 {
		v.fail("bindAddress", "bind-address", s, "at most one IPv4 and one IPv6 address are allowed")
		return
	}
	var fam []bool
	for _, p := range parts {
		a, err := parseAddrSloppy(p)
		if err != nil {
			v.fail("bindAddress", "bind-address", s, "%v", err)
			return
		}
		fam = append(fam, a.Unmap().Is4())
	}
	if len(fam) == 2 && fam[0] == fam[1] {
		v.fail("bindAddress", "bind-address", s, "two addresses must be one IPv4 and one IPv6")
	}
}

// validateHostPort accepts "IP:port" with port 1-65535, or "" (server disabled).
func (v *validator) validateHostPort(field, flag, s string) {
	if s == "" {
		return
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		v.fail(field, flag, s, "want IP:port")
		return
	}
	if _, err := parseAddrSloppy(host); err != nil {
		v.fail(field, flag, s, "%v", err)
	}
	if _, err := parsePort(port); err != nil {
		v.fail(field, flag, s, "%v", err)
	}
}

func (v *validator) validateNodePortAddresses(entries []string) {
	seen := map[string]bool{}
	for _, e := range entries {
		e = strings.TrimSpace(e)
		if contains(nodePortKeywords, e) {
			if seen[e] {
				v.fail("nodePortAddresses", "nodeport-addresses", e, "keyword given twice")
			}
			seen[e] = true
			continue
		}
		if _, err := parsePrefixSloppy(e); err != nil {
			v.fail("nodePortAddresses", "nodeport-addresses", e, "want a CIDR or one of the keywords %s", strings.Join(nodePortKeywords, ", "))
		}
	}
}

func (v *validator) validateDetectLocal(kp *v1alpha1.KubeProxyConfiguration) {
	mode := string(kp.DetectLocalMode)
	if !contains(validDetectLocalModes, mode) {
		v.fail("detectLocalMode", "detect-local-mode", mode, "must be one of %s", strings.Join(validDetectLocalModes, ", "))
		return
	}
	switch mode {
	case "BridgeInterface":
		if strings.TrimSpace(kp.DetectLocal.BridgeInterface) == "" {
			v.fail("detectLocal.bridgeInterface", "pod-bridge-interface", kp.DetectLocal.BridgeInterface, "must be set when detectLocalMode is BridgeInterface")
		}
	case "InterfaceNamePrefix":
		if strings.TrimSpace(kp.DetectLocal.InterfaceNamePrefix) == "" {
			v.fail("detectLocal.interfaceNamePrefix", "pod-interface-name-prefix", kp.DetectLocal.InterfaceNamePrefix, "must be set when detectLocalMode is InterfaceNamePrefix")
		}
	}
}

// validateOwn checks kproxy's own flags, which never come from a file.
func (v *validator) validateOwn(o *options) {
	cidrs, err := parseDualStackCIDRs(o.serviceClusterCIDR)
	if err != nil {
		v.fail("", "service-cluster-ip-range", o.serviceClusterCIDR, "%v", err)
	} else if len(cidrs) == 0 {
		v.fail("", "service-cluster-ip-range", o.serviceClusterCIDR, "must not be empty")
	}
	if _, err := ParsePortRange(o.nodePortRange); err != nil {
		v.fail("", "service-node-port-range", o.nodePortRange, "%v", err)
	}
	if strings.TrimSpace(o.stateDir) == "" {
		v.fail("", "state-dir", o.stateDir, "must not be empty")
	}
	if strings.TrimSpace(o.procSysDir) == "" {
		v.fail("", "proc-sys-dir", o.procSysDir, "must not be empty")
	}
}

// modeSyncPeriods picks the sync periods the mode reads, as upstream's
// v1alpha1 conversion does: ipvs.* in ipvs mode, nftables.* in nftables
// mode, iptables.* otherwise.
func modeSyncPeriods(kp *v1alpha1.KubeProxyConfiguration) (syncPeriod, minSyncPeriod time.Duration) {
	switch kp.Mode {
	case "ipvs":
		return kp.IPVS.SyncPeriod.Duration, kp.IPVS.MinSyncPeriod.Duration
	case "nftables":
		return kp.NFTables.SyncPeriod.Duration, kp.NFTables.MinSyncPeriod.Duration
	default:
		return kp.IPTables.SyncPeriod.Duration, kp.IPTables.MinSyncPeriod.Duration
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
