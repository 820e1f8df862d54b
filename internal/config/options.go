package config

import (
	goflag "flag"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/klog/v2"
	"k8s.io/kube-proxy/config/v1alpha1"
)

// options holds what the command line wrote. Flags that kube-proxy binds to a
// KubeProxyConfiguration field write straight into kp, which starts out with
// upstream's defaults; without --config, kp (after processFlagOnlyValues) is
// the effective configuration, exactly as in kube-proxy.
type options struct {
	kp v1alpha1.KubeProxyConfiguration

	configFile       string
	writeConfigTo    string
	cleanup          bool
	initOnly         bool
	version          versionValue
	master           string
	hostnameOverride string
	proxyMode        string
	detectLocalMode  string

	// kube-proxy also keeps these outside its config object and folds them in
	// only when no --config is given.
	clusterCIDRs          string
	iptablesSyncPeriod    time.Duration
	iptablesMinSyncPeriod time.Duration
	ipvsSyncPeriod        time.Duration
	ipvsMinSyncPeriod     time.Duration
	healthzPort           int32
	metricsPort           int32
	proxyPortRange        string

	// logsapi flags that klog itself lacks (--logging-format and friends).
	logging logsapi.LoggingConfiguration

	// kproxy's own flags.
	manifests          string
	serviceClusterCIDR string
	nodePortRange      string
	stateDir           string
	procSysDir         string
}

// kube-proxy's well-known ports (k8s.io/kubernetes/pkg/cluster/ports).
const (
	defaultHealthzPort = 10256
	defaultMetricsPort = 10249
)

// kproxy's own defaults.
const (
	DefaultServiceClusterIPRange = "10.96.0.0/12"
	DefaultServiceNodePortRange  = "30000-32767"
	DefaultStateDir              = "/var/lib/kproxy"
	DefaultProcSysDir            = "/proc/sys"
)

func newOptions() *options {
	o := &options{
		healthzPort:        defaultHealthzPort,
		metricsPort:        defaultMetricsPort,
		serviceClusterCIDR: DefaultServiceClusterIPRange,
		nodePortRange:      DefaultServiceNodePortRange,
		stateDir:           DefaultStateDir,
		procSysDir:         DefaultProcSysDir,
	}
	setDefaults(&o.kp)
	// kube-proxy's flag defaults come from its internal config, which holds a
	// single sync period pair converted from the iptables fields; so the ipvs
	// flags default to 30s/1s even though ipvs.minSyncPeriod in a file defaults to 0.
	o.iptablesSyncPeriod = o.kp.IPTables.SyncPeriod.Duration
	o.iptablesMinSyncPeriod = o.kp.IPTables.MinSyncPeriod.Duration
	o.ipvsSyncPeriod = o.kp.IPTables.SyncPeriod.Duration
	o.ipvsMinSyncPeriod = o.kp.IPTables.MinSyncPeriod.Duration
	logsapi.SetRecommendedLoggingConfiguration(&o.logging)
	return o
}

// newFlagSet builds the flag set of every flag in flagTable plus klog's flags.
// It never prints: errors come back from Parse, help text from Usage.
func newFlagSet(o *options) (*pflag.FlagSet, *goflag.FlagSet) {
	fs := pflag.NewFlagSet("kproxy", pflag.ContinueOnError)
	fs.SetOutput(discard{})
	fs.Usage = func() {}
	fs.SortFlags = true
	// klog's flags use underscores (log_dir); Kubernetes components accept
	// both spellings and show dashes.
	fs.SetNormalizeFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		return pflag.NormalizedName(strings.ReplaceAll(name, "_", "-"))
	})
	for _, d := range flagTable {
		d.register(fs, o)
	}
	gfs := goflag.NewFlagSet("klog", goflag.ContinueOnError)
	klog.InitFlags(gfs)
	fs.AddGoFlagSet(gfs)
	return fs, gfs
}

// resetKlogVerbosity puts -v and --vmodule back to their defaults so that
// the verbosity after Parse depends only on its arguments, not on earlier calls.
func resetKlogVerbosity(gfs *goflag.FlagSet) {
	_ = gfs.Set("v", "0")
	_ = gfs.Set("vmodule", "")
}

// Usage returns the help text for kproxy's flags.
func Usage() string {
	fs, _ := newFlagSet(newOptions())
	var b strings.Builder
	b.WriteString("kproxy: a Kubernetes Service proxy, a drop-in replacement for kube-proxy.\n\n")
	b.WriteString("Usage:\n  kproxy [flags]\n\nFlags:\n")
	b.WriteString(fs.FlagUsages())
	return b.String()
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// versionValue is --version: a bool that also takes "raw", like
// component-base's verflag.
type versionValue string

func (v *versionValue) String() string {
	if *v == "" {
		return "false"
	}
	return string(*v)
}

func (v *versionValue) Set(s string) error {
	if s == "raw" {
		*v = "raw"
		return nil
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("want true, false or raw")
	}
	*v = versionValue(strconv.FormatBool(b))
	return nil
}

func (v *versionValue) Type() string { return "version" }

// featureGatesValue is --feature-gates: comma-separated Name=bool pairs,
// merged into the map (kube-proxy's mapStringBool flag type).
type featureGatesValue struct{ m *map[string]bool }

func (f featureGatesValue) String() string {
	keys := make([]string, 0, len(*f.m))
	for k := range *f.m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%t", k, (*f.m)[k])
	}
	return strings.Join(parts, ",")
}

func (f featureGatesValue) Set(s string) error {
	if *f.m == nil {
		*f.m = map[string]bool{}
	}
	for _, pair := range strings.Split(s, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		name, val, ok := strings.Cut(pair, "=")
		if !ok || strings.TrimSpace(name) == "" {
			return fmt.Errorf("%q is not of the form Name=true|false", pair)
		}
		b, err := strconv.ParseBool(strings.TrimSpace(val))
		if err != nil {
			return fmt.Errorf("%q: value must be true or false", pair)
		}
		(*f.m)[strings.TrimSpace(name)] = b
	}
	return nil
}

func (f featureGatesValue) Type() string { return "mapStringBool" }
