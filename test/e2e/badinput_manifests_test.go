package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/kproxy/kproxy/test/e2e/cluster"
)

// badManifests are manifests the standalone source must refuse, each with what its
// log line must say: the object and the field. They sit next to a good Service.
var badManifests = []struct{ file, yaml, object, field string }{
	{"bad-port0", svcYAML("bad-port0", "  ports: [{name: http, port: 0}]\n"),
		"service e2e/bad-port0", "spec.ports[0].port: 0 is not between 1 and 65535"},
	{"bad-port65536", svcYAML("bad-port65536", "  ports: [{name: http, port: 65536}]\n"),
		"service e2e/bad-port65536", "spec.ports[0].port: 65536 is not between 1 and 65535"},
	{"bad-cip", svcYAML("bad-cip", "  clusterIP: 10.200.0.1\n  ports: [{name: http, port: 80}]\n"),
		"service e2e/bad-cip", "spec.clusterIP: 10.200.0.1 is outside the service-cluster-ip-range"},
	{"bad-zone-ext", svcYAML("bad-zone-ext", "  externalIPs: ['fe80::1%eth0']\n  ports: [{name: http, port: 80}]\n"),
		"service e2e/bad-zone-ext", `spec.externalIPs[0]: \"fe80::1%eth0\" is not a valid IP address: IPv6 zone identifier \"eth0\" is not allowed`},
	{"bad-zone-lb", svcYAML("bad-zone-lb", "  type: LoadBalancer\n  ipFamilyPolicy: RequireDualStack\n  ports: [{name: http, port: 80}]\n"+
		"status: {loadBalancer: {ingress: [{ip: 192.168.60.20}, {ip: 'fd00:60::20%eth0'}]}}\n"),
		"service e2e/bad-zone-lb", `status.loadBalancer.ingress[1].ip: \"fd00:60::20%eth0\" is not a valid IP address: IPv6 zone identifier \"eth0\" is not allowed`},
	{"bad-zone-eps", sliceYAML("good-zone", "IPv6", "fd00::1%eth0"),
		"endpointslice e2e/good-zone", `endpoints[0].addresses[0]: \"fd00::1%eth0\" is not a valid IPv6 address: IPv6 zone identifier \"eth0\" is not allowed`},
	{"bad-loopback-eps", sliceYAML("good-loopback", "IPv4", "127.0.0.1"),
		"endpointslice e2e/good-loopback", `endpoints[0].addresses[0]: \"127.0.0.1\" may not be in the loopback range`},
}

func svcYAML(name, spec string) string {
	return "apiVersion: v1\nkind: Service\nmetadata: {namespace: e2e, name: " + name + "}\nspec:\n" + spec
}

// sliceYAML is an EndpointSlice of the Service "good" with one endpoint address.
func sliceYAML(name, family, addr string) string {
	return "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {namespace: e2e, name: " + name +
		", labels: {kubernetes.io/service-name: good}}\naddressType: " + family +
		"\nports: [{name: http, port: 80}]\nendpoints: [{addresses: ['" + addr + "']}]\n"
}

// TestBadInputManifests runs kproxy on a manifest directory that holds, next to a
// good Service and its slice, the invalid objects of issue 16: each is refused with a
// log line naming the object and the field, the good Service answers with exactly
// its own endpoints, and no sync fails (before IPv6 zones were refused, the zoned
// IPv6 load balancer IP of the dual-stack Service reached the IPv6 rules, and every
// IPv6 sync failed).
func TestBadInputManifests(t *testing.T) {
	requireKproxy(t)
	for _, mode := range modes() {
		t.Run(mode, func(t *testing.T) {
			c := newCluster(t)
			e := &env{c: c, mode: mode}
			if err := c.WriteManifest("nodes", cluster.NodeYAML("node1", cluster.Node1IP, "10.244.1.0/24")); err != nil {
				t.Fatal(err)
			}
			good := cluster.Service{Namespace: ns, Name: "good", ClusterIP: "10.96.0.50", Ports: []cluster.ServicePort{httpPort}}
			e.apply(t, good, "pod-a2", "pod-b2")
			for _, b := range badManifests {
				if err := c.WriteManifest(b.file, b.yaml); err != nil {
					t.Fatal(err)
				}
			}
			// Dual-stack, so that IPv6 addresses reach the IPv6 rules.
			e.startProxy(t, "--service-cluster-ip-range", cluster.ServiceCIDR+","+cluster.ServiceCIDR6)
			e.dumpOnFailure(t, "good", "bad-zone-ext")
			t.Cleanup(func() { e.proxy.Kill() })

			target := hostPort(good.ClusterIP, 80)
			t.Logf("good answers %v after kproxy started", e.waitAnswer(t, "ext", "tcp", target, firstSync))
			replies := c.Request("ext", "tcp", target, 40)
			requireAll(t, "ext -> good", replies)
			requireBackends(t, "ext -> good", replies, "pod-a2", "pod-b2")

			for _, b := range badManifests {
				err := c.WaitFor(func() error {
					for _, line := range strings.Split(e.proxy.Logs(), "\n") {
						if strings.Contains(line, "Ignoring a manifest") && strings.Contains(line, b.object) && strings.Contains(line, b.field) {
							return nil
						}
					}
					return errorf("no log line naming %s and %q", b.object, b.field)
				}, 10*time.Second)
				if err != nil {
					t.Error(err)
				}
			}
			// Both families were synced by now (the good Service answered, and the log
			// lines above came later), and neither failed.
			if logs := e.proxy.Logs(); strings.Contains(logs, "Sync failed") {
				t.Errorf("a sync failed:\n%s", linesWith(logs, "Sync failed"))
			}
		})
	}
}
