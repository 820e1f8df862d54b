// Package config turns kproxy's command line, and an optional
// KubeProxyConfiguration file, into one validated Config.
//
// kproxy accepts kube-proxy's flags under the same names, meanings and
// defaults. How --config combines with flags follows kube-proxy v1.37
// (cmd/kube-proxy/app/options.go, Options.Complete):
//
//   - Without --config, the flags are the configuration; unset flags keep
//     upstream's defaults.
//   - With --config, the file replaces everything the flags bound to
//     KubeProxyConfiguration fields, whether or not a flag was set:
//     --proxy-mode, --cluster-cidr, --kubeconfig, the sync periods and so on
//     are ignored (kproxy warns about each one that was set). Unset file
//     fields take upstream's defaults, not the flags' values.
//   - Flags that are not config fields still apply with --config: --master,
//     --cleanup, --version, --init-only, --write-config-to, and kproxy's own
//     --manifests, --service-cluster-ip-range, --service-node-port-range and
//     --state-dir.
//   - --hostname-override, when set, wins over the file's hostnameOverride.
//   - Logging flags set on the command line (-v, --vmodule, --logging-format,
//     ...) win over the file's logging section; vmodule entries are joined.
//   - The deprecated --healthz-port and --metrics-port only act without --config.
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"k8s.io/kube-proxy/config/v1alpha1"
)

// ConntrackConfig holds the conntrack settings kproxy applies at startup.
type ConntrackConfig struct {
	MaxPerCore, Min int
	// Zero timeouts mean "leave the kernel's value as is".
	TCPEstablishedTimeout, TCPCloseWaitTimeout time.Duration
	UDPTimeout, UDPStreamTimeout               time.Duration
	TCPBeLiberal                               bool
}

// Config is kproxy's effective, validated configuration.
type Config struct {
	// KubeProxy is the effective configuration with upstream's defaults
	// applied, as kube-proxy would show it on /configz.
	KubeProxy v1alpha1.KubeProxyConfiguration
	// ConfigFile is the --config path ("" if none). kube-proxy exits when
	// that file changes; callers may watch it.
	ConfigFile string

	Mode string // "iptables", "nftables", "ipvs", "userspace"
	// ModeDefaulted is true when no mode was given and iptables was picked;
	// upstream warns that the default becomes nftables in 1.40.
	ModeDefaulted bool
	NodeName      string // hostname-override, lowercased, or the host name
	ClusterCIDRs  []netip.Prefix
	MasqueradeAll bool
	MasqueradeBit int
	// NodePortAddresses is as given: CIDRs and keywords (primary, localhost,
	// all). nil means the mode's default (all for iptables/ipvs, primary for nftables).
	NodePortAddresses  []string
	LocalhostNodePorts bool

	SyncPeriod, MinSyncPeriod, ConfigSyncPeriod time.Duration
	// HealthzBindAddress and MetricsBindAddress are IP:port; "" disables the server.
	HealthzBindAddress, MetricsBindAddress string
	// BindAddress is the node IP override: one IP or an IPv4,IPv6 pair.
	BindAddress string

	Kubeconfig, Master string
	QPS                float32
	Burst              int
	ContentType        string

	Cleanup      bool
	PrintVersion bool
	// PrintVersionRaw is set by --version=raw (implies PrintVersion).
	PrintVersionRaw bool

	DetectLocalMode                      string // "ClusterCIDR" (default), "NodeCIDR", "BridgeInterface", "InterfaceNamePrefix"
	BridgeInterface, InterfaceNamePrefix string

	Conntrack ConntrackConfig

	// kproxy's own settings.
	Manifests              string
	ServiceClusterIPRanges []netip.Prefix
	ServiceNodePortRange   PortRange
	StateDir               string
	// ProcSysDir is where the sysctls live (/proc/sys unless a container mounts the
	// host's /proc/sys/net elsewhere).
	ProcSysDir string

	// Warnings lists, once each, every flag or config field that was given but
	// does not take effect. Parse does not log them; the caller does.
	Warnings []string
}

// Parse parses args (without the program name). It returns the Config, or an
// error for bad or unknown flags and values (pflag.ErrHelp for -h/--help).
// It prints nothing; the caller logs Config.Warnings. It does set klog's
// verbosity (-v, --vmodule, or the file's logging section), as kube-proxy does.
// Without a hostname override the node is named after the machine.
func Parse(args []string) (*Config, error) { return parse(args, os.Hostname) }

// parse is Parse with the machine's host name read by hostname.
func parse(args []string, hostname func() (string, error)) (*Config, error) {
	o := newOptions()
	fs, gfs := newFlagSet(o)
	resetKlogVerbosity(gfs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("kproxy takes no arguments, got %q", fs.Args())
	}

	// Like kube-proxy (verflag runs before the config is loaded), --version
	// answers even when the rest of the configuration is unusable.
	if o.version == "true" || o.version == "raw" {
		return &Config{PrintVersion: true, PrintVersionRaw: o.version == "raw"}, nil
	}

	var kp v1alpha1.KubeProxyConfiguration
	var warnings []string
	fromFile := o.configFile != ""
	if fromFile {
		var err error
		kp, warnings, err = loadConfigFile(o.configFile)
		if err != nil {
			return nil, err
		}
		setDefaults(&kp)
	} else {
		kp = o.kp
		foldFlagOnlyValues(o, &kp)
	}
	if err := syncLogging(fs, gfs, o, &kp, fromFile); err != nil {
		return nil, err
	}
	// The flag wins over the file (upstream's processHostnameOverrideFlag).
	if o.hostnameOverride != "" {
		h := strings.TrimSpace(o.hostnameOverride)
		if h == "" {
			return nil, fmt.Errorf("invalid --hostname-override %q: must not be blank", o.hostnameOverride)
		}
		kp.HostnameOverride = strings.ToLower(h)
	}
	modeDefaulted := setPlatformDefaults(&kp)

	v := &validator{fs: fs}
	if fromFile {
		v.configFile = o.configFile
	}
	v.validateKubeProxy(&kp)
	v.validateOwn(o)
	if len(v.errs) > 0 {
		return nil, errors.Join(v.errs...)
	}

	nodeName, err := nodeName(kp.HostnameOverride, hostname)
	if err != nil {
		return nil, err
	}
	c := build(&kp, o)
	c.NodeName = nodeName
	c.ModeDefaulted = modeDefaulted
	c.Warnings = append(warnings, flagWarnings(fs, fromFile, c.Mode, kp.FeatureGates)...)
	if fromFile {
		c.Warnings = append(c.Warnings, fieldWarnings(o.configFile, &kp)...)
	}
	return c, nil
}

// foldFlagOnlyValues moves the flag values kube-proxy keeps outside its
// config object into kp; it runs only without --config, as upstream's
// processV1Alpha1Flags and deprecated-port handling do.
func foldFlagOnlyValues(o *options, kp *v1alpha1.KubeProxyConfiguration) {
	kp.Mode = v1alpha1.ProxyMode(o.proxyMode)
	kp.DetectLocalMode = v1alpha1.LocalMode(o.detectLocalMode)
	kp.ClusterCIDR = o.clusterCIDRs
	kp.PortRange = o.proxyPortRange
	kp.HealthzBindAddress = addressFromPortFlag(kp.HealthzBindAddress, o.healthzPort)
	kp.MetricsBindAddress = addressFromPortFlag(kp.MetricsBindAddress, o.metricsPort)

	kp.IPTables.SyncPeriod.Duration = o.iptablesSyncPeriod
	kp.IPTables.MinSyncPeriod.Duration = o.iptablesMinSyncPeriod
	kp.IPVS.SyncPeriod.Duration = o.ipvsSyncPeriod
	kp.IPVS.MinSyncPeriod.Duration = o.ipvsMinSyncPeriod
	// kube-proxy's --iptables-*sync-period and --masquerade-all also drive
	// nftables mode; record them where a v1alpha1 reader of nftables looks.
	if kp.Mode == "nftables" {
		kp.NFTables.SyncPeriod = kp.IPTables.SyncPeriod
		kp.NFTables.MinSyncPeriod = kp.IPTables.MinSyncPeriod
		kp.NFTables.MasqueradeAll = kp.IPTables.MasqueradeAll
	}
	if len(kp.NodePortAddresses) == 0 {
		kp.NodePortAddresses = nil
	}
}

// addressFromPortFlag applies a deprecated --healthz-port/--metrics-port:
// 0 disables the server, otherwise the port fills in a bare IP.
func addressFromPortFlag(addr string, port int32) string {
	if port == 0 {
		return ""
	}
	return appendPortIfNeeded(addr, int(port))
}

func nodeName(override string, hostname func() (string, error)) (string, error) {
	if n := strings.ToLower(strings.TrimSpace(override)); n != "" {
		return n, nil
	}
	h, err := hostname()
	if err != nil {
		return "", fmt.Errorf("node name: no --hostname-override and the host name is unknown: %w", err)
	}
	n := strings.ToLower(strings.TrimSpace(h))
	if n == "" {
		return "", fmt.Errorf("node name: no --hostname-override and the host name is empty")
	}
	return n, nil
}

// build derives Config from a validated kp and the remaining flags.
func build(kp *v1alpha1.KubeProxyConfiguration, o *options) *Config {
	c := &Config{
		KubeProxy:           *kp,
		ConfigFile:          o.configFile,
		Mode:                string(kp.Mode),
		MasqueradeAll:       kp.IPTables.MasqueradeAll,
		MasqueradeBit:       int(*kp.IPTables.MasqueradeBit),
		LocalhostNodePorts:  *kp.IPTables.LocalhostNodePorts,
		ConfigSyncPeriod:    kp.ConfigSyncPeriod.Duration,
		HealthzBindAddress:  kp.HealthzBindAddress,
		MetricsBindAddress:  kp.MetricsBindAddress,
		BindAddress:         kp.BindAddress,
		Kubeconfig:          kp.ClientConnection.Kubeconfig,
		Master:              o.master,
		QPS:                 kp.ClientConnection.QPS,
		Burst:               int(kp.ClientConnection.Burst),
		ContentType:         kp.ClientConnection.ContentType,
		Cleanup:             o.cleanup,
		PrintVersion:        o.version == "true" || o.version == "raw",
		PrintVersionRaw:     o.version == "raw",
		DetectLocalMode:     string(kp.DetectLocalMode),
		BridgeInterface:     kp.DetectLocal.BridgeInterface,
		InterfaceNamePrefix: kp.DetectLocal.InterfaceNamePrefix,
		Conntrack: ConntrackConfig{
			MaxPerCore:            int(*kp.Conntrack.MaxPerCore),
			Min:                   int(*kp.Conntrack.Min),
			TCPEstablishedTimeout: kp.Conntrack.TCPEstablishedTimeout.Duration,
			TCPCloseWaitTimeout:   kp.Conntrack.TCPCloseWaitTimeout.Duration,
			UDPTimeout:            kp.Conntrack.UDPTimeout.Duration,
			UDPStreamTimeout:      kp.Conntrack.UDPStreamTimeout.Duration,
			TCPBeLiberal:          kp.Conntrack.TCPBeLiberal,
		},
		Manifests:  o.manifests,
		StateDir:   o.stateDir,
		ProcSysDir: o.procSysDir,
	}
	// nftables mode reads only the nftables section (upstream's conversion).
	if kp.Mode == "nftables" {
		c.MasqueradeAll = kp.NFTables.MasqueradeAll
		c.MasqueradeBit = int(*kp.NFTables.MasqueradeBit)
	}
	c.SyncPeriod, c.MinSyncPeriod = modeSyncPeriods(kp)
	for _, a := range kp.NodePortAddresses {
		c.NodePortAddresses = append(c.NodePortAddresses, strings.TrimSpace(a))
	}
	// Validation has parsed these already; errors cannot happen here.
	c.ClusterCIDRs, _ = parseDualStackCIDRs(kp.ClusterCIDR)
	c.ServiceClusterIPRanges, _ = parseDualStackCIDRs(o.serviceClusterCIDR)
	c.ServiceNodePortRange, _ = ParsePortRange(o.nodePortRange)
	return c
}
