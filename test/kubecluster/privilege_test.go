package kubecluster

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
)

// TestDeployLeastPrivilege: deploy/'s DaemonSet is not privileged and grants only
// ProxyCapabilities, and the cluster renders it so for kproxy.
func TestDeployLeastPrivilege(t *testing.T) {
	d, err := ReadDeployment(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if p := PrivilegeProblems(d.DaemonSet); len(p) > 0 {
		t.Errorf("deploy/daemonset.yaml: %s", strings.Join(p, "; "))
	}
	ds := d.DaemonSet.DeepCopy()
	renderDaemonSet(ds, "kproxy")
	if p := PrivilegeProblems(ds); len(p) > 0 {
		t.Errorf("the cluster's kproxy DaemonSet: %s", strings.Join(p, "; "))
	}
	if cmd := ds.Spec.Template.Spec.Containers[0].Command; !slices.Contains(cmd, "--proc-sys-dir=/host/proc/sys") {
		t.Errorf("kproxy's command %v does not point --proc-sys-dir at the mounted /proc/sys/net", cmd)
	}
}

// TestPrivilegeProblemsCatches: each way of granting more than least privilege is
// reported.
func TestPrivilegeProblemsCatches(t *testing.T) {
	d, err := ReadDeployment(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	yes, no := true, false
	for name, c := range map[string]struct {
		change func(sc *v1.SecurityContext, spec *v1.PodSpec)
		want   string
	}{
		"privileged": {func(sc *v1.SecurityContext, _ *v1.PodSpec) { sc.Privileged = &yes }, "privileged"},
		"sys_admin": {func(sc *v1.SecurityContext, _ *v1.PodSpec) {
			sc.Capabilities.Add = append(sc.Capabilities.Add, "SYS_ADMIN")
		}, "capabilities add"},
		"no drop":    {func(sc *v1.SecurityContext, _ *v1.PodSpec) { sc.Capabilities.Drop = nil }, "do not drop ALL"},
		"writable /": {func(sc *v1.SecurityContext, _ *v1.PodSpec) { sc.ReadOnlyRootFilesystem = &no }, "readOnlyRootFilesystem"},
		"escalation": {func(sc *v1.SecurityContext, _ *v1.PodSpec) { sc.AllowPrivilegeEscalation = nil }, "allowPrivilegeEscalation"},
		"no seccomp": {func(_ *v1.SecurityContext, spec *v1.PodSpec) { spec.SecurityContext = nil }, "seccompProfile"},
		"privileged init": {func(_ *v1.SecurityContext, spec *v1.PodSpec) {
			spec.InitContainers = []v1.Container{{Name: "sysctls", SecurityContext: &v1.SecurityContext{Privileged: &yes}}}
		}, "container sysctls: privileged"},
		"writable /sys": {func(_ *v1.SecurityContext, spec *v1.PodSpec) {
			spec.Volumes = append(spec.Volumes, v1.Volume{Name: "sys", VolumeSource: v1.VolumeSource{HostPath: &v1.HostPathVolumeSource{Path: "/sys"}}})
			spec.Containers[0].VolumeMounts = append(spec.Containers[0].VolumeMounts, v1.VolumeMount{Name: "sys", MountPath: "/host/sys"})
		}, "host path /sys mounted writable"},
	} {
		ds := d.DaemonSet.DeepCopy()
		spec := &ds.Spec.Template.Spec
		c.change(spec.Containers[0].SecurityContext, spec)
		p := strings.Join(PrivilegeProblems(ds), "; ")
		if !strings.Contains(p, c.want) {
			t.Errorf("%s: problems %q lack %q", name, p, c.want)
		}
	}
}

// TestRenderUpstream: upstream kube-proxy runs as kubeadm runs it (privileged,
// without kproxy's own flag).
func TestRenderUpstream(t *testing.T) {
	d, err := ReadDeployment(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	ds := d.DaemonSet.DeepCopy()
	renderDaemonSet(ds, "upstream")
	ctr := ds.Spec.Template.Spec.Containers[0]
	if ctr.Image != UpstreamImage || ctr.Command[0] != "/usr/local/bin/kube-proxy" {
		t.Errorf("image %q command %v", ctr.Image, ctr.Command)
	}
	for _, a := range ctr.Command {
		if strings.HasPrefix(a, "--proc-sys-dir") {
			t.Errorf("kube-proxy's command keeps kproxy's %s", a)
		}
	}
	if sc := ctr.SecurityContext; sc == nil || sc.Privileged == nil || !*sc.Privileged {
		t.Errorf("kube-proxy's securityContext %+v is not kubeadm's privileged one", sc)
	}
}
