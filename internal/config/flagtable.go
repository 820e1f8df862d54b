package config

import (
	"github.com/spf13/pflag"
)

// flagDef describes one command-line flag. kproxy accepts every flag that
// kube-proxy v1.37 has on Linux, under the same name, type and default.
type flagDef struct {
	name string
	// implemented is false for flags kproxy accepts for compatibility but does
	// not act on yet: setting one yields a warning instead of silence. Flip it
	// to true when the feature lands.
	implemented bool
	// inConfig is true when kube-proxy binds the flag to a
	// KubeProxyConfiguration field, so that a --config file replaces its value.
	inConfig bool
	register func(fs *pflag.FlagSet, o *options)
}

// flagTable lists every flag except klog's (registered from klog itself).
var flagTable = []flagDef{
	// Process control: never part of the configuration object.
	{"config", true, false, func(fs *pflag.FlagSet, o *options) {
		fs.StringVar(&o.configFile, "config", "", "Path to a KubeProxyConfiguration file (kubeproxy.config.k8s.io/v1alpha1). When given, kube-proxy takes its settings from the file and ignores most other flags; see the warnings kproxy prints.")
	}},
	{"write-config-to", false, false, func(fs *pflag.FlagSet, o *options) {
		fs.StringVar(&o.writeConfigTo, "write-config-to", "", "If set, write the default configuration to this file and exit.")
	}},
	{"cleanup", true, false, func(fs *pflag.FlagSet, o *options) {
		fs.BoolVar(&o.cleanup, "cleanup", false, "If true, remove the iptables, nftables and ipvs rules kube-proxy may have left behind, then exit.")
	}},
	{"init-only", false, false, func(fs *pflag.FlagSet, o *options) {
		fs.BoolVar(&o.initOnly, "init-only", false, "If true, do the setup that needs full root privileges (sysctls, conntrack limits), then exit.")
	}},
	{"version", true, false, func(fs *pflag.FlagSet, o *options) {
		fs.Var(&o.version, "version", "Print version information and exit (--version=raw prints it in raw form).")
		fs.Lookup("version").NoOptDefVal = "true"
	}},
	{"feature-gates", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.Var(featureGatesValue{&o.kp.FeatureGates}, "feature-gates", "Comma-separated Name=true|false pairs that switch feature gates; kproxy acts on the logging ones (ContextualLogging, LoggingAlphaOptions, LoggingBetaOptions). Ignored with --config.")
	}},

	// API client.
	{"kubeconfig", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.StringVar(&o.kp.ClientConnection.Kubeconfig, "kubeconfig", o.kp.ClientConnection.Kubeconfig, "Path to a kubeconfig file with the API server's address and credentials (--master overrides the address). Ignored with --config (use clientConnection.kubeconfig).")
	}},
	{"master", true, false, func(fs *pflag.FlagSet, o *options) {
		fs.StringVar(&o.master, "master", "", "Address of the Kubernetes API server; overrides the one in the kubeconfig.")
	}},
	{"kube-api-content-type", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.StringVar(&o.kp.ClientConnection.ContentType, "kube-api-content-type", o.kp.ClientConnection.ContentType, "Content type of requests sent to the API server.")
	}},
	{"kube-api-qps", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.Float32Var(&o.kp.ClientConnection.QPS, "kube-api-qps", o.kp.ClientConnection.QPS, "Queries per second allowed towards the API server.")
	}},
	{"kube-api-burst", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.Int32Var(&o.kp.ClientConnection.Burst, "kube-api-burst", o.kp.ClientConnection.Burst, "Burst of queries allowed towards the API server.")
	}},

	// Identity and servers.
	{"hostname-override", true, false, func(fs *pflag.FlagSet, o *options) {
		fs.StringVar(&o.hostnameOverride, "hostname-override", "", "Name of this node's Node object, lowercased. Defaults to the host name. Wins over hostnameOverride in a --config file.")
	}},
	{"bind-address", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.StringVar(&o.kp.BindAddress, "bind-address", o.kp.BindAddress, "Overrides the node's primary IP (the name is historical: nothing binds to it). Ignored with --config.")
	}},
	{"healthz-bind-address", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.StringVar(&o.kp.HealthzBindAddress, "healthz-bind-address", o.kp.HealthzBindAddress, "IP:port of the health check server; empty disables it. Ignored with --config.")
	}},
	{"metrics-bind-address", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.StringVar(&o.kp.MetricsBindAddress, "metrics-bind-address", o.kp.MetricsBindAddress, "IP:port of the metrics server (\"0.0.0.0:10249\" or \"[::]:10249\" for all interfaces); empty disables it. Ignored with --config.")
	}},
	{"healthz-port", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.Int32Var(&o.healthzPort, "healthz-port", o.healthzPort, "DEPRECATED: port of the health check server when --healthz-bind-address has none; 0 disables it. Use --healthz-bind-address.")
	}},
	{"metrics-port", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.Int32Var(&o.metricsPort, "metrics-port", o.metricsPort, "DEPRECATED: port of the metrics server when --metrics-bind-address has none; 0 disables it. Use --metrics-bind-address.")
	}},
	{"bind-address-hard-fail", false, true, func(fs *pflag.FlagSet, o *options) {
		fs.BoolVar(&o.kp.BindAddressHardFail, "bind-address-hard-fail", false, "If true, failing to bind the health or metrics port is fatal.")
	}},
	{"profiling", false, true, func(fs *pflag.FlagSet, o *options) {
		fs.BoolVar(&o.kp.EnableProfiling, "profiling", false, "If true, serve /debug/pprof on the metrics server.")
	}},
	{"show-hidden-metrics-for-version", false, true, func(fs *pflag.FlagSet, o *options) {
		fs.StringVar(&o.kp.ShowHiddenMetricsForVersion, "show-hidden-metrics-for-version", "", "Previous minor version (\"1.36\") whose hidden metrics should still be shown.")
	}},

	// Mode, masquerading and sync periods.
	{"proxy-mode", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.StringVar(&o.proxyMode, "proxy-mode", "", "Proxy mode: iptables (default), nftables, ipvs or userspace. Ignored with --config.")
	}},
	{"iptables-masquerade-bit", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.Int32Var(o.kp.IPTables.MasqueradeBit, "iptables-masquerade-bit", *o.kp.IPTables.MasqueradeBit, "Bit of the fwmark that marks packets to SNAT, in iptables and ipvs modes; within [0, 31].")
	}},
	{"masquerade-all", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.BoolVar(&o.kp.IPTables.MasqueradeAll, "masquerade-all", false, "SNAT all traffic sent to Service cluster IPs.")
	}},
	{"iptables-localhost-nodeports", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.BoolVar(o.kp.IPTables.LocalhostNodePorts, "iptables-localhost-nodeports", *o.kp.IPTables.LocalhostNodePorts, "If false, NodePorts are not reachable on 127.0.0.1 (iptables mode, IPv4).")
	}},
	{"iptables-sync-period", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.DurationVar(&o.iptablesSyncPeriod, "iptables-sync-period", o.iptablesSyncPeriod, "Longest interval between resyncs of the rules (iptables and nftables modes); > 0.")
	}},
	{"iptables-min-sync-period", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.DurationVar(&o.iptablesMinSyncPeriod, "iptables-min-sync-period", o.iptablesMinSyncPeriod, "Shortest interval between rule resyncs (iptables and nftables modes); 0 resyncs on every change.")
	}},
	// The issue asking for kproxy called these two --sync-period and
	// --min-sync-period; accept both spellings for the same values.
	{"sync-period", true, true, func(fs *pflag.FlagSet, _ *options) {
		fs.Var(fs.Lookup("iptables-sync-period").Value, "sync-period", "Alias of --iptables-sync-period.")
	}},
	{"min-sync-period", true, true, func(fs *pflag.FlagSet, _ *options) {
		fs.Var(fs.Lookup("iptables-min-sync-period").Value, "min-sync-period", "Alias of --iptables-min-sync-period.")
	}},
	// In ipvs mode kube-proxy takes its sync periods from these, so they shape
	// Config.SyncPeriod even though ipvs itself is a separate matter.
	{"ipvs-sync-period", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.DurationVar(&o.ipvsSyncPeriod, "ipvs-sync-period", o.ipvsSyncPeriod, "Longest interval between resyncs in ipvs mode; > 0.")
	}},
	{"ipvs-min-sync-period", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.DurationVar(&o.ipvsMinSyncPeriod, "ipvs-min-sync-period", o.ipvsMinSyncPeriod, "Shortest interval between resyncs in ipvs mode.")
	}},
	{"ipvs-scheduler", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.StringVar(&o.kp.IPVS.Scheduler, "ipvs-scheduler", "", "IPVS scheduler in ipvs mode (default rr).")
	}},
	{"ipvs-exclude-cidrs", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.StringSliceVar(&o.kp.IPVS.ExcludeCIDRs, "ipvs-exclude-cidrs", nil, "Comma-separated CIDRs whose IPVS rules cleanup leaves alone.")
	}},
	{"ipvs-strict-arp", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.BoolVar(&o.kp.IPVS.StrictARP, "ipvs-strict-arp", false, "Set arp_ignore=1 and arp_announce=2 for ipvs mode.")
	}},
	{"ipvs-tcp-timeout", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.DurationVar(&o.kp.IPVS.TCPTimeout.Duration, "ipvs-tcp-timeout", 0, "Idle timeout of IPVS TCP connections; 0 leaves it as is.")
	}},
	{"ipvs-tcpfin-timeout", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.DurationVar(&o.kp.IPVS.TCPFinTimeout.Duration, "ipvs-tcpfin-timeout", 0, "Timeout of IPVS TCP connections after a FIN; 0 leaves it as is.")
	}},
	{"ipvs-udp-timeout", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.DurationVar(&o.kp.IPVS.UDPTimeout.Duration, "ipvs-udp-timeout", 0, "Timeout of IPVS UDP flows; 0 leaves it as is.")
	}},

	// Local traffic detection and NodePorts.
	{"detect-local-mode", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.StringVar(&o.detectLocalMode, "detect-local-mode", "", "How to tell pod traffic: ClusterCIDR (default), NodeCIDR, BridgeInterface or InterfaceNamePrefix. Ignored with --config.")
	}},
	{"pod-bridge-interface", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.StringVar(&o.kp.DetectLocal.BridgeInterface, "pod-bridge-interface", "", "With --detect-local-mode=BridgeInterface: traffic from this bridge is local.")
	}},
	{"pod-interface-name-prefix", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.StringVar(&o.kp.DetectLocal.InterfaceNamePrefix, "pod-interface-name-prefix", "", "With --detect-local-mode=InterfaceNamePrefix: traffic from interfaces with this name prefix is local.")
	}},
	{"cluster-cidr", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.StringVar(&o.clusterCIDRs, "cluster-cidr", "", "Pod CIDR of the cluster; a comma-separated IPv4,IPv6 pair for dual-stack. Ignored with --config.")
	}},
	{"nodeport-addresses", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.StringSliceVar(&o.kp.NodePortAddresses, "nodeport-addresses", nil, "Comma-separated CIDRs of node IPs that accept NodePort traffic, or the keywords primary, localhost, all. Unset: all in iptables/ipvs mode, primary in nftables mode. Ignored with --config.")
	}},

	// Process and conntrack.
	{"oom-score-adj", false, true, func(fs *pflag.FlagSet, o *options) {
		fs.Int32Var(o.kp.OOMScoreAdj, "oom-score-adj", *o.kp.OOMScoreAdj, "oom_score_adj of the process, within [-1000, 1000].")
	}},
	{"conntrack-max-per-core", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.Int32Var(o.kp.Conntrack.MaxPerCore, "conntrack-max-per-core", *o.kp.Conntrack.MaxPerCore, "Conntrack entries to allow per CPU core (0 leaves the limit as is and ignores --conntrack-min).")
	}},
	{"conntrack-min", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.Int32Var(o.kp.Conntrack.Min, "conntrack-min", *o.kp.Conntrack.Min, "Lower bound of the conntrack table size, whatever --conntrack-max-per-core gives.")
	}},
	{"conntrack-tcp-timeout-established", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.DurationVar(&o.kp.Conntrack.TCPEstablishedTimeout.Duration, "conntrack-tcp-timeout-established", o.kp.Conntrack.TCPEstablishedTimeout.Duration, "Idle timeout of established TCP connections (0 leaves it as is).")
	}},
	{"conntrack-tcp-timeout-close-wait", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.DurationVar(&o.kp.Conntrack.TCPCloseWaitTimeout.Duration, "conntrack-tcp-timeout-close-wait", o.kp.Conntrack.TCPCloseWaitTimeout.Duration, "Conntrack timeout of TCP connections in CLOSE_WAIT.")
	}},
	{"conntrack-tcp-be-liberal", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.BoolVar(&o.kp.Conntrack.TCPBeLiberal, "conntrack-tcp-be-liberal", false, "Set nf_conntrack_tcp_be_liberal to 1.")
	}},
	{"conntrack-udp-timeout", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.DurationVar(&o.kp.Conntrack.UDPTimeout.Duration, "conntrack-udp-timeout", 0, "Idle timeout of unreplied UDP flows (0 leaves it as is).")
	}},
	{"conntrack-udp-timeout-stream", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.DurationVar(&o.kp.Conntrack.UDPStreamTimeout.Duration, "conntrack-udp-timeout-stream", 0, "Idle timeout of assured UDP flows (0 leaves it as is).")
	}},
	{"config-sync-period", true, true, func(fs *pflag.FlagSet, o *options) {
		fs.DurationVar(&o.kp.ConfigSyncPeriod.Duration, "config-sync-period", o.kp.ConfigSyncPeriod.Duration, "How often the informers resync from the API server; > 0.")
	}},
	{"proxy-port-range", false, true, func(fs *pflag.FlagSet, o *options) {
		fs.StringVar(&o.proxyPortRange, "proxy-port-range", "", "DEPRECATED: no effect (it served the removed userspace proxy).")
	}},

	// Logging flags of component-base that klog does not have; -v and
	// --vmodule come from klog. Package logging applies them.
	{"logging-format", true, false, func(fs *pflag.FlagSet, o *options) {
		fs.StringVar(&o.logging.Format, "logging-format", o.logging.Format, `Log format: "text" or "json".`)
	}},
	{"log-flush-frequency", true, false, func(fs *pflag.FlagSet, o *options) {
		fs.DurationVar(&o.logging.FlushFrequency.Duration.Duration, "log-flush-frequency", o.logging.FlushFrequency.Duration.Duration, "Longest time between log flushes.")
	}},
	{"log-text-split-stream", true, false, func(fs *pflag.FlagSet, o *options) {
		fs.BoolVar(&o.logging.Options.Text.SplitStream, "log-text-split-stream", false, "[Alpha] Text format: errors to stderr, info to stdout.")
	}},
	{"log-text-info-buffer-size", true, false, func(fs *pflag.FlagSet, o *options) {
		fs.Var(&o.logging.Options.Text.InfoBufferSize, "log-text-info-buffer-size", "[Alpha] Text format with split streams: bytes of info messages to buffer.")
	}},
	{"log-json-split-stream", true, false, func(fs *pflag.FlagSet, o *options) {
		fs.BoolVar(&o.logging.Options.JSON.SplitStream, "log-json-split-stream", false, "[Alpha] JSON format: errors to stderr, info to stdout.")
	}},
	{"log-json-info-buffer-size", true, false, func(fs *pflag.FlagSet, o *options) {
		fs.Var(&o.logging.Options.JSON.InfoBufferSize, "log-json-info-buffer-size", "[Alpha] JSON format with split streams: bytes of info messages to buffer.")
	}},

	// kproxy's own flags: no kube-proxy counterpart, so --config never replaces them.
	{"manifests", true, false, func(fs *pflag.FlagSet, o *options) {
		fs.StringVar(&o.manifests, "manifests", "", "Directory of YAML Services and EndpointSlices to proxy without an API server (standalone mode).")
	}},
	{"service-cluster-ip-range", true, false, func(fs *pflag.FlagSet, o *options) {
		fs.StringVar(&o.serviceClusterCIDR, "service-cluster-ip-range", o.serviceClusterCIDR, "Comma-separated Service cluster IP CIDRs, at most one per IP family.")
	}},
	{"service-node-port-range", true, false, func(fs *pflag.FlagSet, o *options) {
		fs.StringVar(&o.nodePortRange, "service-node-port-range", o.nodePortRange, "NodePort range, as A-B (inclusive).")
	}},
	{"state-dir", true, false, func(fs *pflag.FlagSet, o *options) {
		fs.StringVar(&o.stateDir, "state-dir", o.stateDir, "Directory for kproxy's own state.")
	}},
	{"proc-sys-dir", true, false, func(fs *pflag.FlagSet, o *options) {
		fs.StringVar(&o.procSysDir, "proc-sys-dir", o.procSysDir, "Where kproxy reads and writes the kernel's net.* sysctls. A container's /proc/sys is read-only: mount the host's /proc/sys/net read-write at DIR/net and give DIR (deploy/daemonset.yaml).")
	}},
}
