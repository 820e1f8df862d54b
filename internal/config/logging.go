package config

import (
	goflag "flag"
	"fmt"
	"strconv"

	"github.com/spf13/pflag"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/kube-proxy/config/v1alpha1"
)

// syncLogging makes kp.Logging and klog agree. Without --config the logging
// flags are the configuration. With --config, logging flags set on the
// command line win over the file's logging section (upstream's
// copyLogsFromFlags), and the file's verbosity and vmodule otherwise reach
// klog, so "verbosity: 4" in a ConfigMap works as it does for kube-proxy.
func syncLogging(fs *pflag.FlagSet, gfs *goflag.FlagSet, o *options, kp *v1alpha1.KubeProxyConfiguration, fromFile bool) error {
	if !fromFile {
		kp.Logging = o.logging
	} else {
		l := &kp.Logging
		if fs.Changed("logging-format") {
			l.Format = o.logging.Format
		}
		if fs.Changed("log-flush-frequency") {
			l.FlushFrequency = o.logging.FlushFrequency
		}
		if fs.Changed("log-text-split-stream") {
			l.Options.Text.SplitStream = o.logging.Options.Text.SplitStream
		}
		if fs.Changed("log-text-info-buffer-size") {
			l.Options.Text.InfoBufferSize = o.logging.Options.Text.InfoBufferSize
		}
		if fs.Changed("log-json-split-stream") {
			l.Options.JSON.SplitStream = o.logging.Options.JSON.SplitStream
		}
		if fs.Changed("log-json-info-buffer-size") {
			l.Options.JSON.InfoBufferSize = o.logging.Options.JSON.InfoBufferSize
		}
		if !fs.Changed("v") && kp.Logging.Verbosity != 0 {
			if err := gfs.Set("v", strconv.FormatUint(uint64(kp.Logging.Verbosity), 10)); err != nil {
				return fmt.Errorf("config file %s: logging.verbosity: %w", o.configFile, err)
			}
		}
		if len(kp.Logging.VModule) > 0 {
			// File entries first, command-line entries after, so the flag's win.
			joined := append(logsapi.VModuleConfiguration(nil), kp.Logging.VModule...)
			if fs.Changed("vmodule") {
				var fromFlag logsapi.VModuleConfiguration
				if err := logsapi.VModuleConfigurationPflag(&fromFlag).Set(gfs.Lookup("vmodule").Value.String()); err != nil {
					return fmt.Errorf("invalid --vmodule: %w", err)
				}
				joined = append(joined, fromFlag...)
			}
			if err := gfs.Set("vmodule", logsapi.VModuleConfigurationPflag(&joined).String()); err != nil {
				return fmt.Errorf("config file %s: logging.vmodule: %w", o.configFile, err)
			}
		}
	}
	// Record what klog now runs with.
	verbosity, err := strconv.ParseUint(gfs.Lookup("v").Value.String(), 10, 32)
	if err != nil {
		return fmt.Errorf("klog verbosity %q: %w", gfs.Lookup("v").Value.String(), err)
	}
	kp.Logging.Verbosity = logsapi.VerbosityLevel(verbosity)
	var vmodule logsapi.VModuleConfiguration
	if s := gfs.Lookup("vmodule").Value.String(); s != "" {
		if err := logsapi.VModuleConfigurationPflag(&vmodule).Set(s); err != nil {
			return fmt.Errorf("invalid --vmodule %q: %w", s, err)
		}
	}
	kp.Logging.VModule = vmodule
	return nil
}
