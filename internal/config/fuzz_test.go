package config

import "testing"

// FuzzDecodeConfig feeds arbitrary bytes to the KubeProxyConfiguration reader: a bad
// file must give an error or warnings, never a panic.
func FuzzDecodeConfig(f *testing.F) {
	f.Add([]byte("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: nftables\n"))
	f.Add([]byte("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nclusterCIDR: 10.244.0.0/16,fd00::/48\n" +
		"nodePortAddresses: [primary]\nconntrack: {maxPerCore: 0}\nlogging: {format: json, verbosity: 4}\nunknownField: 1\n"))
	f.Add([]byte("{}"))
	f.Fuzz(func(_ *testing.T, data []byte) {
		_, _, _ = decodeConfig(data)
	})
}
