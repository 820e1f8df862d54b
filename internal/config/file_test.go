package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/klog/v2"
)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.conf")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// kubeadmConfig is the config.conf key of the kube-proxy ConfigMap that
// kubeadm writes: every field present, most of them zero.
const kubeadmConfig = `apiVersion: kubeproxy.config.k8s.io/v1alpha1
bindAddress: 0.0.0.0
bindAddressHardFail: false
clientConnection:
  acceptContentTypes: ""
  burst: 0
  contentType: ""
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 0
clusterCIDR: 10.244.0.0/16
configSyncPeriod: 0s
conntrack:
  maxPerCore: null
  min: null
  tcpBeLiberal: false
  tcpCloseWaitTimeout: null
  tcpEstablishedTimeout: null
  udpStreamTimeout: 0s
  udpTimeout: 0s
detectLocal:
  bridgeInterface: ""
  interfaceNamePrefix: ""
detectLocalMode: ""
enableProfiling: false
healthzBindAddress: ""
hostnameOverride: ""
iptables:
  localhostNodePorts: null
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: ""
  strictARP: false
  syncPeriod: 0s
  tcpFinTimeout: 0s
  tcpTimeout: 0s
  udpTimeout: 0s
kind: KubeProxyConfiguration
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: "0"
    text:
      infoBufferSize: "0"
  verbosity: 0
metricsBindAddress: ""
mode: ""
nftables:
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
nodePortAddresses: null
oomScoreAdj: null
portRange: ""
showHiddenMetricsForVersion: ""
winkernel:
  enableDSR: false
  forwardHealthCheckVip: false
  networkName: ""
  rootHnsEndpointName: ""
  sourceVip: ""
`

func TestKubeadmConfigLoadsWithDefaults(t *testing.T) {
	path := writeFile(t, kubeadmConfig)
	c := mustParse(t, "--config", path)
	if len(c.Warnings) != 0 {
		t.Errorf("kubeadm's config gave warnings: %q", c.Warnings)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"ConfigFile", c.ConfigFile, path},
		{"Mode", c.Mode, "iptables"},
		{"ModeDefaulted", c.ModeDefaulted, true},
		{"NodeName", c.NodeName, "worker-1.example.com"},
		{"Kubeconfig", c.Kubeconfig, "/var/lib/kube-proxy/kubeconfig.conf"},
		{"ClusterCIDRs", c.ClusterCIDRs, []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}},
		{"SyncPeriod", c.SyncPeriod, 30 * time.Second},
		{"MinSyncPeriod", c.MinSyncPeriod, time.Second},
		{"ConfigSyncPeriod", c.ConfigSyncPeriod, 15 * time.Minute},
		{"MasqueradeBit", c.MasqueradeBit, 14},
		{"LocalhostNodePorts", c.LocalhostNodePorts, true},
		{"HealthzBindAddress", c.HealthzBindAddress, "0.0.0.0:10256"},
		{"MetricsBindAddress", c.MetricsBindAddress, "127.0.0.1:10249"},
		{"QPS", c.QPS, float32(5)},
		{"Burst", c.Burst, 10},
		{"ContentType", c.ContentType, "application/vnd.kubernetes.protobuf"},
		{"DetectLocalMode", c.DetectLocalMode, "ClusterCIDR"},
		{"NodePortAddresses", c.NodePortAddresses, []string(nil)},
		{"Conntrack", c.Conntrack, ConntrackConfig{
			MaxPerCore: 32768, Min: 131072,
			TCPEstablishedTimeout: 24 * time.Hour, TCPCloseWaitTimeout: time.Hour,
		}},
		{"KubeProxy.OOMScoreAdj", *c.KubeProxy.OOMScoreAdj, int32(-999)},
		{"KubeProxy.Logging.FlushFrequency", c.KubeProxy.Logging.FlushFrequency.Duration.Duration, 5 * time.Second},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %#v, want %#v", ch.name, ch.got, ch.want)
		}
	}
}

func TestConfigFileValues(t *testing.T) {
	path := writeFile(t, `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
hostnameOverride: From-File
clusterCIDR: "10.244.0.0/16,fd00:10:244::/56"
nodePortAddresses: [primary]
bindAddress: "::"
iptables:
  masqueradeBit: 3
  syncPeriod: 10s
nftables:
  masqueradeAll: true
  masqueradeBit: 9
  syncPeriod: 40s
  minSyncPeriod: 5s
conntrack:
  maxPerCore: 0
  tcpBeLiberal: true
detectLocalMode: InterfaceNamePrefix
detectLocal:
  interfaceNamePrefix: veth
`)
	c := mustParse(t, "--config="+path)
	checks := []struct {
		name      string
		got, want any
	}{
		{"Mode", c.Mode, "nftables"},
		{"NodeName", c.NodeName, "from-file"},
		{"ClusterCIDRs", c.ClusterCIDRs, []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:10:244::/56")}},
		{"NodePortAddresses", c.NodePortAddresses, []string{"primary"}},
		// nftables mode reads the nftables section only.
		{"MasqueradeBit", c.MasqueradeBit, 9},
		{"MasqueradeAll", c.MasqueradeAll, true},
		{"SyncPeriod", c.SyncPeriod, 40 * time.Second},
		{"MinSyncPeriod", c.MinSyncPeriod, 5 * time.Second},
		{"Conntrack.MaxPerCore", c.Conntrack.MaxPerCore, 0},
		{"Conntrack.Min", c.Conntrack.Min, 131072},
		{"Conntrack.TCPBeLiberal", c.Conntrack.TCPBeLiberal, true},
		{"DetectLocalMode", c.DetectLocalMode, "InterfaceNamePrefix"},
		{"InterfaceNamePrefix", c.InterfaceNamePrefix, "veth"},
		// An IPv6 bind address makes the default servers IPv6.
		{"HealthzBindAddress", c.HealthzBindAddress, "[::]:10256"},
		{"MetricsBindAddress", c.MetricsBindAddress, "[::1]:10249"},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %#v, want %#v", ch.name, ch.got, ch.want)
		}
	}
}

func TestConfigFileUnknownFieldsWarn(t *testing.T) {
	path := writeFile(t, `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
futureTopLevel: 1
iptables:
  syncPeriod: 20s
  futureKnob: true
logging:
  verbosity: 0
  futureLogKnob: x
`)
	c := mustParse(t, "--config", path)
	if c.SyncPeriod != 20*time.Second {
		t.Errorf("known fields next to unknown ones were lost: SyncPeriod %v", c.SyncPeriod)
	}
	for _, f := range []string{`"futureTopLevel"`, `"iptables.futureKnob"`, `"logging.futureLogKnob"`} {
		if countContaining(c.Warnings, "unknown field "+f) != 1 {
			t.Errorf("no single warning for unknown field %s: %q", f, c.Warnings)
		}
	}
	if len(c.Warnings) != 3 {
		t.Errorf("want 3 warnings, got %q", c.Warnings)
	}
}

func TestConfigFileUnimplementedFieldsWarn(t *testing.T) {
	path := writeFile(t, `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
featureGates:
  SomeGate: true
  LoggingAlphaOptions: true
enableProfiling: true
oomScoreAdj: -500
ipvs:
  scheduler: lc
  strictARP: true
winkernel:
  enableDSR: true
logging:
  format: json
  options:
    json:
      splitStream: true
`)
	c := mustParse(t, "--config", path)
	// ipvs.scheduler, ipvs.strictARP, enableProfiling, the logging section and the
	// logging feature gates are implemented: no warning.
	for _, f := range []string{"featureGates (SomeGate)", "oomScoreAdj", "winkernel.enableDSR"} {
		want := "field " + f + " is accepted for kube-proxy compatibility but not implemented yet; ignored"
		if countContaining(c.Warnings, want) != 1 {
			t.Errorf("no single warning %q in %q", want, c.Warnings)
		}
	}
	if len(c.Warnings) != 3 {
		t.Errorf("want 3 warnings, got %d: %q", len(c.Warnings), c.Warnings)
	}
	if !c.KubeProxy.EnableProfiling {
		t.Errorf("enableProfiling: true in the file was not applied")
	}
}

func TestConfigFileErrors(t *testing.T) {
	cases := []struct{ content, want string }{
		{"apiVersion: kubeproxy.config.k8s.io/v1alpha2\nkind: KubeProxyConfiguration\n", `apiVersion is "kubeproxy.config.k8s.io/v1alpha2"`},
		{"apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeletConfiguration\n", `kind is "KubeletConfiguration"`},
		{"kind: KubeProxyConfiguration\n", `apiVersion is`},
		{"apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: [a\n", "not valid YAML"},
		{"apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nconntrack:\n  min: lots\n", "min"},
		{"- a\n- b\n", "got a list"},
		{"apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\niptables:\n  syncPeriod: -5s\n", `invalid iptables.syncPeriod "-5s": must be greater than 0`},
		{"apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nclusterCIDR: 10.0.0.0/8,10.1.0.0/16\n", `invalid clusterCIDR "10.0.0.0/8,10.1.0.0/16"`},
		{"apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\nipvs:\n  syncPeriod: 1s\n  minSyncPeriod: 2s\n", `invalid ipvs.minSyncPeriod "2s": must not be greater than the sync period 1s`},
	}
	for _, tc := range cases {
		path := writeFile(t, tc.content)
		_, err := parseArgs([]string{"--config", path})
		if err == nil {
			t.Errorf("%q: no error", tc.content)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%q: error %q does not name the file and contain %q", tc.content, err, tc.want)
		}
	}
	if _, err := parseArgs([]string{"--config", filepath.Join(t.TempDir(), "missing.yaml")}); err == nil {
		t.Errorf("missing config file: no error")
	}
}

// Upstream's rule (Options.Complete): the file replaces flags bound to config
// fields; --hostname-override, --master, logging flags and flags outside the
// config object still apply.
func TestConfigFilePrecedenceOverFlags(t *testing.T) {
	defer func() { _, _ = parseArgs(nil) }() // leave klog at verbosity 0
	path := writeFile(t, `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
hostnameOverride: file-node
clusterCIDR: 10.244.0.0/16
clientConnection:
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
logging:
  verbosity: 3
`)
	c := mustParse(t, "--config", path,
		"--proxy-mode=nftables", "--cluster-cidr=10.0.0.0/8", "--kubeconfig=/flag/kubeconfig",
		"--iptables-sync-period=5s", "--oom-score-adj=10",
		"--hostname-override=Flag-Node", "--master=https://10.0.0.1:6443",
		"--manifests=/srv/manifests", "--state-dir=/run/kp", "--cleanup", "-v=2")

	if c.Mode != "iptables" || c.SyncPeriod != 30*time.Second || c.Kubeconfig != "/var/lib/kube-proxy/kubeconfig.conf" ||
		!reflect.DeepEqual(c.ClusterCIDRs, []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}) {
		t.Errorf("flags bound to config fields overrode the file: mode %s sync %v kubeconfig %s cidrs %v",
			c.Mode, c.SyncPeriod, c.Kubeconfig, c.ClusterCIDRs)
	}
	if *c.KubeProxy.OOMScoreAdj != -999 {
		t.Errorf("--oom-score-adj overrode the file's default: %d", *c.KubeProxy.OOMScoreAdj)
	}
	if c.NodeName != "flag-node" || c.Master != "https://10.0.0.1:6443" || c.Manifests != "/srv/manifests" ||
		c.StateDir != "/run/kp" || !c.Cleanup {
		t.Errorf("flags outside the config object were lost: %+v", c)
	}
	if c.KubeProxy.Logging.Verbosity != 2 || !klog.V(2).Enabled() || klog.V(3).Enabled() {
		t.Errorf("-v=2 should win over the file's verbosity 3, got %d", c.KubeProxy.Logging.Verbosity)
	}
	for _, f := range []string{"proxy-mode", "cluster-cidr", "kubeconfig", "iptables-sync-period", "oom-score-adj"} {
		want := "flag --" + f + " is ignored because --config is given"
		if countContaining(c.Warnings, want) != 1 {
			t.Errorf("no single warning %q in %q", want, c.Warnings)
		}
	}
	if len(c.Warnings) != 5 {
		t.Errorf("want 5 warnings, got %q", c.Warnings)
	}

	// Without -v the file's verbosity reaches klog.
	c = mustParse(t, "--config", path)
	if c.KubeProxy.Logging.Verbosity != 3 || !klog.V(3).Enabled() {
		t.Errorf("file verbosity 3 not applied: %d", c.KubeProxy.Logging.Verbosity)
	}
}
