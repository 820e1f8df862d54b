// Package logging applies kube-proxy's logging configuration (-v, --vmodule,
// --logging-format, --log-flush-frequency, the split-stream and info-buffer options,
// or a config file's logging section) through the Kubernetes logging library, as
// kube-proxy does: the same validation, the text and json formats, and contextual
// logging (klog.FromContext) switched by the same feature gates.
package logging

import (
	"fmt"
	"io"

	"k8s.io/component-base/featuregate"
	logsapi "k8s.io/component-base/logs/api/v1"
	// The json format, as in kube-proxy's binary; text is built in.
	_ "k8s.io/component-base/logs/json/register"
)

// Apply validates c and makes it the process's logging configuration: klog, and the
// loggers klog.FromContext returns, write in c's format to out (info) and errOut
// (errors, and everything unless a split stream is asked for). gates are the
// configuration's feature gates; those of logging (ContextualLogging,
// LoggingAlphaOptions, LoggingBetaOptions) apply, the others are not this package's.
// It can be done once per process: later calls fail.
func Apply(c *logsapi.LoggingConfiguration, gates map[string]bool, out, errOut io.Writer) error {
	fg, err := featureGate(gates)
	if err != nil {
		return err
	}
	streams := &logsapi.LoggingOptions{InfoStream: out, ErrorStream: errOut}
	if err := logsapi.ValidateAndApplyWithOptions(c, streams, fg); err != nil {
		return fmt.Errorf("logging configuration: %w", err)
	}
	return nil
}

// IsLoggingGate reports whether Apply honours the feature gate name.
func IsLoggingGate(name string) bool {
	_, ok := newGate().GetAll()[featuregate.Feature(name)]
	return ok && name != "AllAlpha" && name != "AllBeta"
}

// featureGate is the logging feature gates at their defaults, set as gates says.
func featureGate(gates map[string]bool) (featuregate.FeatureGate, error) {
	fg := newGate()
	set := map[string]bool{}
	for name, on := range gates {
		if IsLoggingGate(name) {
			set[name] = on
		}
	}
	if err := fg.SetFromMap(set); err != nil {
		return nil, fmt.Errorf("logging feature gates: %w", err)
	}
	return fg, nil
}

func newGate() featuregate.MutableVersionedFeatureGate {
	fg := featuregate.NewFeatureGate()
	// Adding the package's own gates to a new gate cannot clash.
	if err := logsapi.AddFeatureGates(fg); err != nil {
		panic(fmt.Sprintf("logging: adding the logging feature gates: %v", err))
	}
	return fg
}
