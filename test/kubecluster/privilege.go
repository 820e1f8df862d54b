package kubecluster

import (
	"fmt"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
)

// ProxyCapabilities are the only capabilities deploy/'s DaemonSet grants kproxy
// (deploy/daemonset.yaml says why each one).
var ProxyCapabilities = []v1.Capability{"NET_ADMIN", "NET_RAW"}

// writableHostPaths are the host paths kproxy may write: the xtables lock it shares
// with the kubelet, and the net.* sysctls.
var writableHostPaths = map[string]bool{"/run/xtables.lock": true, "/proc/sys/net": true}

// PrivilegeProblems lists what makes the pod template of ds run with more than
// least privilege: a privileged container, capabilities beyond ProxyCapabilities
// (or not dropping the rest), a writable root filesystem, privilege escalation, no
// seccomp filter, or a writable host path other than writableHostPaths.
func PrivilegeProblems(ds *appsv1.DaemonSet) []string {
	spec := ds.Spec.Template.Spec
	var out []string
	if sc := spec.SecurityContext; sc == nil || sc.SeccompProfile == nil || sc.SeccompProfile.Type != v1.SeccompProfileTypeRuntimeDefault {
		out = append(out, "pod: seccompProfile is not RuntimeDefault")
	}
	hostPaths := map[string]string{}
	for _, vol := range spec.Volumes {
		if vol.HostPath != nil {
			hostPaths[vol.Name] = vol.HostPath.Path
		}
	}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		out = append(out, containerProblems(c, hostPaths)...)
	}
	return out
}

func containerProblems(c v1.Container, hostPaths map[string]string) []string {
	var out []string
	bad := func(format string, args ...any) {
		out = append(out, fmt.Sprintf("container %s: ", c.Name)+fmt.Sprintf(format, args...))
	}
	sc := c.SecurityContext
	if sc == nil {
		return []string{fmt.Sprintf("container %s: no securityContext", c.Name)}
	}
	if sc.Privileged != nil && *sc.Privileged {
		bad("privileged")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		bad("allowPrivilegeEscalation is not false")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		bad("readOnlyRootFilesystem is not true")
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []v1.Capability{"ALL"}) {
		bad("capabilities do not drop ALL")
	}
	var added []v1.Capability
	if sc.Capabilities != nil {
		added = slices.Sorted(slices.Values(sc.Capabilities.Add))
	}
	if !slices.Equal(added, ProxyCapabilities) {
		bad("capabilities add %v, want exactly %v", added, ProxyCapabilities)
	}
	for _, m := range c.VolumeMounts {
		if path, ok := hostPaths[m.Name]; ok && !m.ReadOnly && !writableHostPaths[path] {
			bad("host path %s mounted writable at %s", path, m.MountPath)
		}
	}
	return out
}
