package config

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/kube-proxy/config/v1alpha1"
)

// Defaults of KubeProxyConfiguration v1alpha1, as upstream's SetDefaults
// (K/pkg/proxy/apis/config/v1alpha1/defaults.go) and reference 1.7 give them.
const (
	defaultSyncPeriod        = 30 * time.Second
	defaultMinSyncPeriod     = 1 * time.Second
	defaultConfigSyncPeriod  = 15 * time.Minute
	defaultMasqueradeBit     = 14
	defaultOOMScoreAdj       = -999
	defaultConntrackPerCore  = 32 * 1024
	defaultConntrackMin      = 128 * 1024
	defaultTCPEstablished    = 24 * time.Hour
	defaultTCPCloseWait      = 1 * time.Hour
	defaultContentType       = "application/vnd.kubernetes.protobuf"
	defaultQPS               = 5
	defaultBurst             = 10
	defaultDetectLocalMode   = "ClusterCIDR"
	defaultProxyMode         = "iptables"
	apiVersionKubeProxy      = "kubeproxy.config.k8s.io/v1alpha1"
	kindKubeProxyConfig      = "KubeProxyConfiguration"
	defaultBindAddressV4     = "0.0.0.0"
	defaultHealthzHostV4     = "0.0.0.0"
	defaultHealthzHostV6     = "[::]"
	defaultMetricsHostV4     = "127.0.0.1"
	defaultMetricsHostV6     = "[::1]"
	defaultLocalhostNodePort = true
)

// setDefaults fills the unset fields of kp with upstream's defaults. Like
// upstream, a zero duration counts as unset, so iptables.minSyncPeriod: 0s in
// a file still becomes 1s.
func setDefaults(kp *v1alpha1.KubeProxyConfiguration) {
	kp.APIVersion = apiVersionKubeProxy
	kp.Kind = kindKubeProxyConfig
	if kp.BindAddress == "" {
		kp.BindAddress = defaultBindAddressV4
	}
	healthzHost, metricsHost := defaultHealthzHostV4, defaultMetricsHostV4
	if !bindAddressIsIPv4(kp.BindAddress) {
		healthzHost, metricsHost = defaultHealthzHostV6, defaultMetricsHostV6
	}
	if kp.HealthzBindAddress == "" {
		kp.HealthzBindAddress = healthzHost + ":" + strconv.Itoa(defaultHealthzPort)
	} else {
		kp.HealthzBindAddress = appendPortIfNeeded(kp.HealthzBindAddress, defaultHealthzPort)
	}
	if kp.MetricsBindAddress == "" {
		kp.MetricsBindAddress = metricsHost + ":" + strconv.Itoa(defaultMetricsPort)
	} else {
		kp.MetricsBindAddress = appendPortIfNeeded(kp.MetricsBindAddress, defaultMetricsPort)
	}
	if kp.OOMScoreAdj == nil {
		kp.OOMScoreAdj = int32Ptr(defaultOOMScoreAdj)
	}

	defaultDuration(&kp.IPTables.SyncPeriod, defaultSyncPeriod)
	defaultDuration(&kp.IPTables.MinSyncPeriod, defaultMinSyncPeriod)
	if kp.IPTables.MasqueradeBit == nil {
		kp.IPTables.MasqueradeBit = int32Ptr(defaultMasqueradeBit)
	}
	if kp.IPTables.LocalhostNodePorts == nil {
		b := defaultLocalhostNodePort
		kp.IPTables.LocalhostNodePorts = &b
	}
	defaultDuration(&kp.NFTables.SyncPeriod, defaultSyncPeriod)
	defaultDuration(&kp.NFTables.MinSyncPeriod, defaultMinSyncPeriod)
	if kp.NFTables.MasqueradeBit == nil {
		kp.NFTables.MasqueradeBit = int32Ptr(defaultMasqueradeBit)
	}
	// ipvs.minSyncPeriod has no default: 0 is meaningful there.
	defaultDuration(&kp.IPVS.SyncPeriod, defaultSyncPeriod)

	if kp.Conntrack.MaxPerCore == nil {
		kp.Conntrack.MaxPerCore = int32Ptr(defaultConntrackPerCore)
	}
	if kp.Conntrack.Min == nil {
		kp.Conntrack.Min = int32Ptr(defaultConntrackMin)
	}
	if kp.Conntrack.TCPEstablishedTimeout == nil {
		kp.Conntrack.TCPEstablishedTimeout = &metav1.Duration{Duration: defaultTCPEstablished}
	}
	if kp.Conntrack.TCPCloseWaitTimeout == nil {
		kp.Conntrack.TCPCloseWaitTimeout = &metav1.Duration{Duration: defaultTCPCloseWait}
	}
	defaultDuration(&kp.ConfigSyncPeriod, defaultConfigSyncPeriod)

	if kp.ClientConnection.ContentType == "" {
		kp.ClientConnection.ContentType = defaultContentType
	}
	if kp.ClientConnection.QPS == 0 {
		kp.ClientConnection.QPS = defaultQPS
	}
	if kp.ClientConnection.Burst == 0 {
		kp.ClientConnection.Burst = defaultBurst
	}
	if kp.FeatureGates == nil {
		kp.FeatureGates = map[string]bool{}
	}
	logsapi.SetRecommendedLoggingConfiguration(&kp.Logging)
}

// setPlatformDefaults is what upstream does on Linux after loading (its
// platformApplyDefaults): an empty mode means iptables and an empty
// detectLocalMode means ClusterCIDR. It reports whether the mode was empty,
// because upstream warns that the default will become nftables.
func setPlatformDefaults(kp *v1alpha1.KubeProxyConfiguration) (modeDefaulted bool) {
	if kp.Mode == "" {
		kp.Mode = defaultProxyMode
		modeDefaulted = true
	}
	if kp.DetectLocalMode == "" {
		kp.DetectLocalMode = defaultDetectLocalMode
	}
	return modeDefaulted
}

func defaultDuration(d *metav1.Duration, def time.Duration) {
	if d.Duration == 0 {
		d.Duration = def
	}
}

func int32Ptr(v int32) *int32 { return &v }

// bindAddressIsIPv4 reports whether the (first) bind address is IPv4; like
// upstream, anything unparsable counts as IPv6 for picking default hosts.
func bindAddressIsIPv4(bind string) bool {
	first, _, _ := strings.Cut(bind, ",")
	a, err := parseAddrSloppy(first)
	return err == nil && a.Unmap().Is4()
}

// appendPortIfNeeded adds port to addr when addr is a bare IP; anything else
// (host:port, garbage) is returned unchanged for validation to judge.
func appendPortIfNeeded(addr string, port int) string {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	a, err := parseAddrSloppy(addr)
	if err != nil {
		return addr
	}
	return netip.AddrPortFrom(a, uint16(port)).String()
}
