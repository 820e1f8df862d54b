package config

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/klog/v2"
)

const testHostName = "Worker-1.Example.COM"

// parseArgs is Parse on a machine named testHostName.
func parseArgs(args []string) (*Config, error) {
	return parse(args, func() (string, error) { return testHostName, nil })
}

func mustParse(t *testing.T, args ...string) *Config {
	t.Helper()
	c, err := parseArgs(args)
	if err != nil {
		t.Fatalf("Parse(%q): %v", args, err)
	}
	return c
}

func TestDefaultsMatchUpstream(t *testing.T) {
	c := mustParse(t)
	checks := []struct {
		name      string
		got, want any
	}{
		{"Mode", c.Mode, "iptables"},
		{"ModeDefaulted", c.ModeDefaulted, true},
		{"NodeName", c.NodeName, "worker-1.example.com"},
		{"ClusterCIDRs", c.ClusterCIDRs, []netip.Prefix(nil)},
		{"MasqueradeAll", c.MasqueradeAll, false},
		{"MasqueradeBit", c.MasqueradeBit, 14},
		{"NodePortAddresses", c.NodePortAddresses, []string(nil)},
		{"LocalhostNodePorts", c.LocalhostNodePorts, true},
		{"SyncPeriod", c.SyncPeriod, 30 * time.Second},
		{"MinSyncPeriod", c.MinSyncPeriod, time.Second},
		{"ConfigSyncPeriod", c.ConfigSyncPeriod, 15 * time.Minute},
		{"HealthzBindAddress", c.HealthzBindAddress, "0.0.0.0:10256"},
		{"MetricsBindAddress", c.MetricsBindAddress, "127.0.0.1:10249"},
		{"BindAddress", c.BindAddress, "0.0.0.0"},
		{"Kubeconfig", c.Kubeconfig, ""},
		{"Master", c.Master, ""},
		{"QPS", c.QPS, float32(5)},
		{"Burst", c.Burst, 10},
		{"ContentType", c.ContentType, "application/vnd.kubernetes.protobuf"},
		{"Cleanup", c.Cleanup, false},
		{"PrintVersion", c.PrintVersion, false},
		{"DetectLocalMode", c.DetectLocalMode, "ClusterCIDR"},
		{"Conntrack", c.Conntrack, ConntrackConfig{
			MaxPerCore: 32768, Min: 131072,
			TCPEstablishedTimeout: 24 * time.Hour, TCPCloseWaitTimeout: time.Hour,
		}},
		{"Manifests", c.Manifests, ""},
		{"ServiceClusterIPRanges", c.ServiceClusterIPRanges, []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}},
		{"ServiceNodePortRange", c.ServiceNodePortRange, PortRange{Base: 30000, Size: 2768}},
		{"StateDir", c.StateDir, "/var/lib/kproxy"},
		{"ProcSysDir", c.ProcSysDir, "/proc/sys"},
		{"Warnings", len(c.Warnings), 0},
		{"KubeProxy.OOMScoreAdj", *c.KubeProxy.OOMScoreAdj, int32(-999)},
		{"KubeProxy.IPVS.SyncPeriod", c.KubeProxy.IPVS.SyncPeriod.Duration, 30 * time.Second},
		{"KubeProxy.NFTables.MasqueradeBit", *c.KubeProxy.NFTables.MasqueradeBit, int32(14)},
		{"KubeProxy.Logging.Format", c.KubeProxy.Logging.Format, "text"},
		{"KubeProxy.Logging.FlushFrequency", c.KubeProxy.Logging.FlushFrequency.Duration.Duration, 5 * time.Second},
		{"KubeProxy.APIVersion", c.KubeProxy.APIVersion, "kubeproxy.config.k8s.io/v1alpha1"},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %#v, want %#v", ch.name, ch.got, ch.want)
		}
	}
}

// Without --config the defaults come from the flags; with an empty file they
// come from the v1alpha1 defaulting. Upstream gives the same result for both,
// except ipvs.minSyncPeriod (flag default 1s, file default 0).
func TestFlagDefaultsEqualFileDefaults(t *testing.T) {
	path := writeFile(t, "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n")
	fromFlags := mustParse(t)
	fromFile := mustParse(t, "--config", path)
	fromFile.ConfigFile = ""
	fromFile.KubeProxy.IPVS.MinSyncPeriod = fromFlags.KubeProxy.IPVS.MinSyncPeriod
	if fromFile.KubeProxy.IPVS.MinSyncPeriod.Duration != time.Second {
		t.Errorf("flag default of ipvs min sync period = %v, want 1s", fromFlags.KubeProxy.IPVS.MinSyncPeriod)
	}
	if !reflect.DeepEqual(fromFlags, fromFile) {
		t.Errorf("defaults differ:\nflags: %+v\nfile:  %+v", fromFlags, fromFile)
	}
}

func TestImplementedFlagsLandInConfig(t *testing.T) {
	cases := []struct {
		args  []string
		check func(c *Config) bool
	}{
		{[]string{"--proxy-mode=nftables"}, func(c *Config) bool { return c.Mode == "nftables" && !c.ModeDefaulted }},
		{[]string{"--proxy-mode", "ipvs"}, func(c *Config) bool { return c.Mode == "ipvs" }},
		{[]string{"--proxy-mode=userspace"}, func(c *Config) bool { return c.Mode == "userspace" }},
		{[]string{"--hostname-override=Node-A"}, func(c *Config) bool {
			return c.NodeName == "node-a" && c.KubeProxy.HostnameOverride == "node-a"
		}},
		{[]string{"--cluster-cidr=10.244.0.0/16"}, func(c *Config) bool {
			return reflect.DeepEqual(c.ClusterCIDRs, []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")})
		}},
		{[]string{"--masquerade-all"}, func(c *Config) bool { return c.MasqueradeAll }},
		{[]string{"--masquerade-all", "--proxy-mode=nftables"}, func(c *Config) bool {
			return c.MasqueradeAll && c.KubeProxy.NFTables.MasqueradeAll
		}},
		{[]string{"--iptables-masquerade-bit=5"}, func(c *Config) bool { return c.MasqueradeBit == 5 }},
		{[]string{"--nodeport-addresses=primary,192.168.0.0/16"}, func(c *Config) bool {
			return reflect.DeepEqual(c.NodePortAddresses, []string{"primary", "192.168.0.0/16"})
		}},
		{[]string{"--iptables-sync-period=45s"}, func(c *Config) bool { return c.SyncPeriod == 45*time.Second }},
		{[]string{"--iptables-min-sync-period=0"}, func(c *Config) bool { return c.MinSyncPeriod == 0 }},
		{[]string{"--proxy-mode=nftables", "--iptables-sync-period=50s", "--iptables-min-sync-period=2s"}, func(c *Config) bool {
			return c.SyncPeriod == 50*time.Second && c.MinSyncPeriod == 2*time.Second &&
				c.KubeProxy.NFTables.SyncPeriod.Duration == 50*time.Second
		}},
		{[]string{"--proxy-mode=ipvs", "--ipvs-sync-period=20s", "--ipvs-min-sync-period=3s"}, func(c *Config) bool {
			return c.SyncPeriod == 20*time.Second && c.MinSyncPeriod == 3*time.Second
		}},
		{[]string{"--kubeconfig=/etc/kp/kubeconfig"}, func(c *Config) bool { return c.Kubeconfig == "/etc/kp/kubeconfig" }},
		{[]string{"--master=https://127.0.0.1:6443"}, func(c *Config) bool { return c.Master == "https://127.0.0.1:6443" }},
		{[]string{"--healthz-bind-address=127.0.0.1:20256"}, func(c *Config) bool { return c.HealthzBindAddress == "127.0.0.1:20256" }},
		{[]string{"--healthz-bind-address=127.0.0.2"}, func(c *Config) bool { return c.HealthzBindAddress == "127.0.0.2:10256" }},
		{[]string{"--healthz-bind-address="}, func(c *Config) bool { return c.HealthzBindAddress == "" }},
		{[]string{"--healthz-port=0"}, func(c *Config) bool { return c.HealthzBindAddress == "" }},
		{[]string{"--metrics-bind-address=[::1]:9000"}, func(c *Config) bool { return c.MetricsBindAddress == "[::1]:9000" }},
		{[]string{"--metrics-bind-address=::1", "--metrics-port=9100"}, func(c *Config) bool { return c.MetricsBindAddress == "[::1]:9100" }},
		{[]string{"--cleanup"}, func(c *Config) bool { return c.Cleanup }},
		{[]string{"--conntrack-max-per-core=0"}, func(c *Config) bool { return c.Conntrack.MaxPerCore == 0 }},
		{[]string{"--conntrack-min=1000"}, func(c *Config) bool { return c.Conntrack.Min == 1000 }},
		{[]string{"--conntrack-tcp-timeout-established=2h"}, func(c *Config) bool { return c.Conntrack.TCPEstablishedTimeout == 2*time.Hour }},
		{[]string{"--conntrack-tcp-timeout-close-wait=30m"}, func(c *Config) bool { return c.Conntrack.TCPCloseWaitTimeout == 30*time.Minute }},
		{[]string{"--conntrack-tcp-be-liberal"}, func(c *Config) bool { return c.Conntrack.TCPBeLiberal }},
		{[]string{"--conntrack-udp-timeout=30s"}, func(c *Config) bool { return c.Conntrack.UDPTimeout == 30*time.Second }},
		{[]string{"--conntrack-udp-timeout-stream=2m"}, func(c *Config) bool { return c.Conntrack.UDPStreamTimeout == 2*time.Minute }},
		{[]string{"--detect-local-mode=BridgeInterface", "--pod-bridge-interface=cbr0"}, func(c *Config) bool {
			return c.DetectLocalMode == "BridgeInterface" && c.BridgeInterface == "cbr0"
		}},
		{[]string{"--detect-local-mode=InterfaceNamePrefix", "--pod-interface-name-prefix=veth"}, func(c *Config) bool {
			return c.DetectLocalMode == "InterfaceNamePrefix" && c.InterfaceNamePrefix == "veth"
		}},
		{[]string{"--detect-local-mode=NodeCIDR"}, func(c *Config) bool { return c.DetectLocalMode == "NodeCIDR" }},
		{[]string{"--iptables-localhost-nodeports=false"}, func(c *Config) bool { return !c.LocalhostNodePorts }},
		{[]string{"--bind-address=10.0.0.5"}, func(c *Config) bool { return c.BindAddress == "10.0.0.5" }},
		{[]string{"--config-sync-period=5m"}, func(c *Config) bool { return c.ConfigSyncPeriod == 5*time.Minute }},
		{[]string{"--kube-api-qps=50"}, func(c *Config) bool { return c.QPS == 50 }},
		{[]string{"--kube-api-burst=100"}, func(c *Config) bool { return c.Burst == 100 }},
		{[]string{"--kube-api-content-type=application/json"}, func(c *Config) bool { return c.ContentType == "application/json" }},
		{[]string{"--manifests=/etc/kproxy/manifests"}, func(c *Config) bool { return c.Manifests == "/etc/kproxy/manifests" }},
		{[]string{"--service-cluster-ip-range=10.0.0.0/16,fd00:10:96::/112"}, func(c *Config) bool {
			return reflect.DeepEqual(c.ServiceClusterIPRanges, []netip.Prefix{
				netip.MustParsePrefix("10.0.0.0/16"), netip.MustParsePrefix("fd00:10:96::/112")})
		}},
		{[]string{"--service-node-port-range=20000-20009"}, func(c *Config) bool {
			return c.ServiceNodePortRange == PortRange{Base: 20000, Size: 10}
		}},
		{[]string{"--state-dir=/run/kproxy"}, func(c *Config) bool { return c.StateDir == "/run/kproxy" }},
		{[]string{"--proc-sys-dir=/host/proc/sys"}, func(c *Config) bool { return c.ProcSysDir == "/host/proc/sys" }},
		{[]string{"--version"}, func(c *Config) bool { return c.PrintVersion && !c.PrintVersionRaw }},
		{[]string{"--version=raw"}, func(c *Config) bool { return c.PrintVersion && c.PrintVersionRaw }},
		{[]string{"--version=false"}, func(c *Config) bool { return !c.PrintVersion }},
		// As in kube-proxy, --version answers before the configuration is loaded or checked.
		{[]string{"--version", "--config=/nonexistent/kube-proxy.yaml", "--iptables-masquerade-bit=99"}, func(c *Config) bool { return c.PrintVersion }},
		{[]string{"--nodeport-addresses=10.0.0.0/8, primary"}, func(c *Config) bool {
			return reflect.DeepEqual(c.NodePortAddresses, []string{"10.0.0.0/8", "primary"})
		}},
	}
	for _, tc := range cases {
		c := mustParse(t, tc.args...)
		if !tc.check(c) {
			t.Errorf("Parse(%q): flag did not land in Config: %+v", tc.args, c)
		}
	}
}

func TestSyncPeriodAliases(t *testing.T) {
	c := mustParse(t, "--sync-period=10s", "--min-sync-period=2s")
	if c.SyncPeriod != 10*time.Second || c.MinSyncPeriod != 2*time.Second {
		t.Errorf("aliases: SyncPeriod %v, MinSyncPeriod %v; want 10s, 2s", c.SyncPeriod, c.MinSyncPeriod)
	}
	if c.KubeProxy.IPTables.SyncPeriod.Duration != 10*time.Second {
		t.Errorf("alias did not reach iptables.syncPeriod: %v", c.KubeProxy.IPTables.SyncPeriod)
	}
	if len(c.Warnings) != 0 {
		t.Errorf("aliases gave warnings: %q", c.Warnings)
	}
}

func TestKlogFlags(t *testing.T) {
	defer func() { _, _ = parseArgs(nil) }() // leave klog at verbosity 0
	for _, args := range [][]string{{"-v", "4"}, {"--v=4"}, {"-v=4"}} {
		c := mustParse(t, args...)
		if c.KubeProxy.Logging.Verbosity != 4 {
			t.Errorf("%q: Logging.Verbosity = %d, want 4", args, c.KubeProxy.Logging.Verbosity)
		}
		if !klog.V(4).Enabled() || klog.V(5).Enabled() {
			t.Errorf("%q: klog verbosity is not 4", args)
		}
	}
	c := mustParse(t, "--vmodule=proxier=6", "--logtostderr=true", "--log_file_max_size=10", "--log-file-max-size=10")
	if len(c.KubeProxy.Logging.VModule) != 1 || c.KubeProxy.Logging.VModule[0].FilePattern != "proxier" {
		t.Errorf("vmodule not recorded: %+v", c.KubeProxy.Logging.VModule)
	}
	// Verbosity depends only on this call's arguments.
	if c.KubeProxy.Logging.Verbosity != 0 || klog.V(1).Enabled() {
		t.Errorf("verbosity leaked from an earlier Parse: %d", c.KubeProxy.Logging.Verbosity)
	}
}

// sampleValues holds a valid value for each flag that is not implemented, so
// the test below can set every one. A new unimplemented flag needs an entry.
var sampleValues = map[string]string{
	"write-config-to":                 "/tmp/kp.yaml",
	"init-only":                       "true",
	"bind-address-hard-fail":          "true",
	"profiling":                       "true",
	"show-hidden-metrics-for-version": "1.36",
	"ipvs-scheduler":                  "lc",
	"ipvs-exclude-cidrs":              "10.0.0.0/8",
	"ipvs-strict-arp":                 "true",
	"ipvs-tcp-timeout":                "1m",
	"ipvs-tcpfin-timeout":             "1m",
	"ipvs-udp-timeout":                "1m",
	"oom-score-adj":                   "-500",
	"proxy-port-range":                "1000-2000",
}

func TestUnimplementedFlagsWarn(t *testing.T) {
	var all []string
	for _, d := range flagTable {
		if d.implemented {
			continue
		}
		val, ok := sampleValues[d.name]
		if !ok {
			t.Errorf("flag --%s is not implemented but has no sample value in this test", d.name)
			continue
		}
		arg := "--" + d.name + "=" + val
		all = append(all, arg)
		c, err := parseArgs([]string{arg})
		if err != nil {
			t.Errorf("%s: unexpected error %v", arg, err)
			continue
		}
		want := "flag --" + d.name + " is accepted for kube-proxy compatibility but not implemented yet; ignored"
		if n := countContaining(c.Warnings, want); n != 1 {
			t.Errorf("%s: warning %q appears %d times in %q", arg, want, n, c.Warnings)
		}
	}
	// All at once: still one warning per flag.
	c := mustParse(t, all...)
	if len(c.Warnings) != len(all) {
		t.Errorf("%d unimplemented flags gave %d warnings: %q", len(all), len(c.Warnings), c.Warnings)
	}
}

// kproxy acts on the logging feature gates only: the others are recorded (and shown
// in KubeProxy) but named in a warning; the logging ones and the logging flags warn
// about nothing.
func TestFeatureGatesWarnOnlyForGatesKproxyIgnores(t *testing.T) {
	c := mustParse(t, "--feature-gates=SomeGate=true,LoggingAlphaOptions=true,OtherGate=false",
		"--logging-format=json", "--log-json-split-stream")
	if !c.KubeProxy.FeatureGates["SomeGate"] || !c.KubeProxy.FeatureGates["LoggingAlphaOptions"] {
		t.Errorf("feature gates not recorded in KubeProxy: %v", c.KubeProxy.FeatureGates)
	}
	want := "flag --feature-gates: gates OtherGate, SomeGate are accepted for kube-proxy compatibility but not implemented yet; ignored"
	if len(c.Warnings) != 1 || c.Warnings[0] != want {
		t.Errorf("warnings %q, want only %q", c.Warnings, want)
	}
	if c.KubeProxy.Logging.Format != "json" || !c.KubeProxy.Logging.Options.JSON.SplitStream {
		t.Errorf("logging flags not recorded: %+v", c.KubeProxy.Logging)
	}
	if c := mustParse(t, "--feature-gates=ContextualLogging=false"); len(c.Warnings) != 0 {
		t.Errorf("a logging gate alone: warnings %q, want none", c.Warnings)
	}
}

func countContaining(list []string, s string) int {
	n := 0
	for _, x := range list {
		if strings.Contains(x, s) {
			n++
		}
	}
	return n
}

func TestModeMismatchWarnings(t *testing.T) {
	c := mustParse(t, "--proxy-mode=nftables", "--iptables-masquerade-bit=3")
	if c.MasqueradeBit != 14 {
		t.Errorf("nftables mode took --iptables-masquerade-bit: %d", c.MasqueradeBit)
	}
	if countContaining(c.Warnings, "flag --iptables-masquerade-bit has no effect in nftables mode") != 1 {
		t.Errorf("no mode warning: %q", c.Warnings)
	}
	c = mustParse(t, "--proxy-mode=ipvs", "--iptables-sync-period=5s")
	if c.SyncPeriod != 30*time.Second {
		t.Errorf("ipvs mode took --iptables-sync-period: %v", c.SyncPeriod)
	}
	if countContaining(c.Warnings, "flag --iptables-sync-period has no effect in ipvs mode") != 1 {
		t.Errorf("no mode warning: %q", c.Warnings)
	}
}

func TestUnknownFlagIsAnError(t *testing.T) {
	_, err := parseArgs([]string{"--no-such-flag=1"})
	if err == nil || !strings.Contains(err.Error(), "no-such-flag") {
		t.Fatalf("unknown flag: err = %v", err)
	}
	// Windows-only kube-proxy flags do not exist on Linux.
	if _, err := parseArgs([]string{"--windows-service"}); err == nil {
		t.Errorf("--windows-service accepted")
	}
	if _, err := parseArgs([]string{"stray-argument"}); err == nil {
		t.Errorf("positional argument accepted")
	}
}

func TestHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help"} {
		if _, err := parseArgs([]string{arg}); !errors.Is(err, pflag.ErrHelp) {
			t.Errorf("%s: err = %v, want pflag.ErrHelp", arg, err)
		}
	}
	u := Usage()
	for _, want := range []string{"--proxy-mode", "--manifests", "--service-node-port-range", "-v, --v", "--log-dir", "--iptables-sync-period duration", "(default 30s)"} {
		if !strings.Contains(u, want) {
			t.Errorf("Usage() lacks %q", want)
		}
	}
}

// Every flag kube-proxy v1.37 registers on Linux (cmd/kube-proxy/app/options.go
// AddFlags, logsapi.AddFlags, verflag) must parse.
func TestEveryUpstreamFlagIsAccepted(t *testing.T) {
	upstream := []string{
		"config", "write-config-to", "cleanup", "feature-gates", "kubeconfig", "master",
		"kube-api-content-type", "kube-api-burst", "kube-api-qps", "hostname-override",
		"bind-address", "healthz-bind-address", "metrics-bind-address", "bind-address-hard-fail",
		"profiling", "show-hidden-metrics-for-version", "init-only", "proxy-mode",
		"iptables-masquerade-bit", "masquerade-all", "iptables-localhost-nodeports",
		"iptables-sync-period", "iptables-min-sync-period", "ipvs-sync-period", "ipvs-min-sync-period",
		"ipvs-scheduler", "ipvs-exclude-cidrs", "ipvs-strict-arp", "ipvs-tcp-timeout",
		"ipvs-tcpfin-timeout", "ipvs-udp-timeout", "detect-local-mode", "pod-bridge-interface",
		"pod-interface-name-prefix", "cluster-cidr", "nodeport-addresses", "oom-score-adj",
		"conntrack-max-per-core", "conntrack-min", "conntrack-tcp-timeout-established",
		"conntrack-tcp-timeout-close-wait", "conntrack-tcp-be-liberal", "conntrack-udp-timeout",
		"conntrack-udp-timeout-stream", "config-sync-period", "healthz-port", "metrics-port",
		"proxy-port-range", "logging-format", "log-flush-frequency", "v", "vmodule",
		"log-text-split-stream", "log-text-info-buffer-size", "log-json-split-stream",
		"log-json-info-buffer-size", "version",
	}
	fs, _ := newFlagSet(newOptions())
	for _, name := range upstream {
		if fs.Lookup(name) == nil {
			t.Errorf("kube-proxy flag --%s is not registered", name)
		}
	}
	// And every table entry is registered under its name.
	for _, d := range flagTable {
		if fs.Lookup(d.name) == nil {
			t.Errorf("flagTable entry %q registered no flag of that name", d.name)
		}
	}
}
