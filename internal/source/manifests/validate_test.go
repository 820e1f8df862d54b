package manifests

import (
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	discovery "k8s.io/api/discovery/v1"

	"github.com/kproxy/kproxy/internal/model"
)

func parseOne(t *testing.T, doc string) *parsedObject {
	t.Helper()
	objs, err := parseFile("test.yaml", []byte(doc))
	if err != nil || len(objs) != 1 {
		t.Fatalf("parsing %q: %v, %d objects", doc, err, len(objs))
	}
	return &objs[0]
}

func TestServiceValidation(t *testing.T) {
	dual := []model.Family{model.IPv4, model.IPv6}
	for _, tc := range []struct {
		name, spec string
		families   []model.Family
		wantErr    string // "" means valid
	}{
		{"ok", "  ports: [{port: 80}]\n", dual, ""},
		{"port-range", "  ports: [{port: 70000}]\n", dual, "spec.ports[0].port: 70000 is not between 1 and 65535"},
		{"protocol", "  ports: [{port: 80, protocol: ICMP}]\n", dual, `spec.ports[0].protocol: unsupported value "ICMP"`},
		{"bad-ip", "  clusterIP: 10.96.0.300\n  ports: [{port: 80}]\n", dual, `spec.clusterIPs[0]: "10.96.0.300" is not a valid IP address`},
		{"unnamed-ports", "  ports: [{port: 80}, {port: 81}]\n", dual, "spec.ports[1].name: required"},
		{"dup-names", "  ports: [{name: a, port: 80}, {name: a, port: 81}]\n", dual, `spec.ports[1].name: "a" is also the name of spec.ports[0]`},
		{"dup-port", "  ports: [{name: a, port: 80}, {name: b, port: 80}]\n", dual, "port 80/TCP is also spec.ports[0]"},
		{"affinity-timeout", "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 90000}}\n  ports: [{port: 80}]\n", dual, "timeoutSeconds: 90000 is not between 1 and 86400"},
		{"source-ranges", "  type: LoadBalancer\n  loadBalancerSourceRanges: [10.0.0.0/33]\n  ports: [{port: 80}]\n", dual, `"10.0.0.0/33" is not a valid CIDR`},
		{"nodeport-on-clusterip", "  ports: [{port: 80, nodePort: 30000}]\n", dual, "may not be used when type is ClusterIP"},
		{"dup-nodeport", "  type: NodePort\n  ports: [{name: a, port: 80, nodePort: 30000}, {name: b, port: 81, nodePort: 30000}]\n", dual, "30000/TCP is also spec.ports[0].nodePort"},
		{"shared-nodeport-tcp-udp", "  type: NodePort\n  ports: [{name: a, port: 53, nodePort: 30053}, {name: b, port: 53, protocol: UDP, nodePort: 30053}]\n", dual, ""},
		{"etp-on-clusterip", "  externalTrafficPolicy: Local\n  ports: [{port: 80}]\n", dual, "may only be set for externally-accessible services"},
		{"hcnp-on-nodeport", "  type: NodePort\n  healthCheckNodePort: 30001\n  ports: [{port: 80}]\n", dual, "spec.healthCheckNodePort: may only be set"},
		{"require-dual-on-single", "  ipFamilyPolicy: RequireDualStack\n  ports: [{port: 80}]\n", []model.Family{model.IPv4}, "RequireDualStack needs"},
		{"v6-on-v4-cluster", "  ipFamilies: [IPv6]\n  ports: [{port: 80}]\n", []model.Family{model.IPv4}, "spec.ipFamilies[0]: IPv6 is not configured"},
		{"single-with-two", "  ipFamilyPolicy: SingleStack\n  ipFamilies: [IPv4, IPv6]\n  ports: [{port: 80}]\n", dual, "SingleStack allows one IP family"},
		{"family-mismatch", "  clusterIP: 10.96.0.5\n  ipFamilies: [IPv6]\n  ports: [{port: 80}]\n", dual, "spec.ipFamilies[0]: IPv6 does not match"},
		{"headless-nodeport", "  type: NodePort\n  clusterIP: None\n  ports: [{port: 80}]\n", dual, "may not be None"},
		{"no-ports", "  type: ClusterIP\n", dual, "spec.ports: required"},
		{"port-0", "  ports: [{port: 0}]\n", dual, "spec.ports[0].port: 0 is not between 1 and 65535"},
		{"port-65536", "  ports: [{port: 65536}]\n", dual, "spec.ports[0].port: 65536 is not between 1 and 65535"},
		{"port-65535", "  ports: [{port: 65535}]\n", dual, ""},
		{"zone-external-ip", "  externalIPs: [192.0.2.1, 'fe80::1%eth0']\n  ports: [{port: 80}]\n", dual,
			`spec.externalIPs[1]: "fe80::1%eth0" is not a valid IP address: IPv6 zone identifier "eth0" is not allowed`},
		{"loopback-external-ip", "  externalIPs: [127.0.0.2]\n  ports: [{port: 80}]\n", dual,
			`spec.externalIPs[0]: "127.0.0.2" may not be in the loopback range`},
		{"zone-lb-ip", "  type: LoadBalancer\n  ports: [{port: 80}]\nstatus: {loadBalancer: {ingress: [{ip: 'fd00::1%lo'}]}}\n", dual,
			`status.loadBalancer.ingress[0].ip: "fd00::1%lo" is not a valid IP address: IPv6 zone identifier "lo" is not allowed`},
		{"zone-cluster-ip", "  clusterIP: 'fd00::1%eth0'\n  ports: [{port: 80}]\n", dual, `spec.clusterIPs[0]: "fd00::1%eth0" is not a valid IP address`},
		{"port-name-63", "  ports: [{name: " + strings.Repeat("p", 63) + ", port: 80}]\n", dual, ""},
		{"port-name-64", "  ports: [{name: " + strings.Repeat("p", 64) + ", port: 80}]\n", dual, "spec.ports[0].name: must be no more than 63 characters"},
		{"bad-lb-ip", "  type: LoadBalancer\n  ports: [{port: 80}]\nstatus: {loadBalancer: {ingress: [{ip: 1.2.3}]}}\n", dual, "status.loadBalancer.ingress[0].ip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := parseOne(t, service("svc", tc.spec))
			if p.err != nil {
				t.Fatalf("decode: %v", p.err)
			}
			svc := p.obj.(*v1.Service)
			svc.Namespace = "default"
			_, err := planService(svc, tc.families)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("rejected a valid Service: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("got error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestDualStackPlans(t *testing.T) {
	for _, tc := range []struct {
		spec     string
		families []model.Family
		want     []v1.IPFamily
	}{
		{"  ports: [{port: 80}]\n", []model.Family{model.IPv6, model.IPv4}, []v1.IPFamily{v1.IPv6Protocol}},
		{"  ipFamilyPolicy: PreferDualStack\n  ports: [{port: 80}]\n", []model.Family{model.IPv6, model.IPv4}, []v1.IPFamily{v1.IPv6Protocol, v1.IPv4Protocol}},
		{"  ipFamilyPolicy: PreferDualStack\n  ports: [{port: 80}]\n", []model.Family{model.IPv4}, []v1.IPFamily{v1.IPv4Protocol}},
		{"  ipFamilyPolicy: RequireDualStack\n  ipFamilies: [IPv6]\n  ports: [{port: 80}]\n", []model.Family{model.IPv4, model.IPv6}, []v1.IPFamily{v1.IPv6Protocol, v1.IPv4Protocol}},
		{"  clusterIPs: [fd00::5, 10.96.0.5]\n  ports: [{port: 80}]\n", []model.Family{model.IPv4, model.IPv6}, []v1.IPFamily{v1.IPv6Protocol, v1.IPv4Protocol}},
	} {
		svc := parseOne(t, service("svc", tc.spec)).obj.(*v1.Service)
		svc.Namespace = "default"
		plan, err := planService(svc, tc.families)
		if err != nil {
			t.Errorf("%q: %v", tc.spec, err)
			continue
		}
		if !slices.Equal(plan.svc.Spec.IPFamilies, tc.want) || len(plan.req.IPs) != len(tc.want) {
			t.Errorf("%q on %v: families %v (%d requests), want %v", tc.spec, tc.families, plan.svc.Spec.IPFamilies, len(plan.req.IPs), tc.want)
		}
	}
}

func TestEndpointSliceValidation(t *testing.T) {
	const head = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: s}\n"
	for _, tc := range []struct{ body, wantErr string }{
		{"addressType: IPv4\nendpoints: [{addresses: [10.0.0.1]}]\nports: [{port: 80}]\n", ""},
		{"addressType: IPv4\nendpoints: [{addresses: [fd00::1]}]\n", `endpoints[0].addresses[0]: "fd00::1" is not a valid IPv4 address`},
		{"addressType: IPv6\nendpoints: [{addresses: [not-an-ip]}]\n", "is not a valid IPv6 address"},
		{"addressType: IPv4\nendpoints: [{addresses: []}]\n", "must have between 1 and 100"},
		{"addressType: IPv4\nports: [{port: 0}]\n", "ports[0].port: 0 is not between 1 and 65535"},
		{"addressType: IPv4\nports: [{port: 80, protocol: FOO}]\n", "unsupported value"},
		{"addressType: IPv4\nports: [{port: 80}, {port: 81}]\n", `"" is also the name of ports[0]`},
		{"addressType: Foo\n", "addressType: unsupported value"},
		{"addressType: IPv6\nendpoints: [{addresses: ['fd00::1%eth0']}]\n",
			`endpoints[0].addresses[0]: "fd00::1%eth0" is not a valid IPv6 address: IPv6 zone identifier "eth0" is not allowed`},
		{"addressType: IPv4\nendpoints: [{addresses: [127.0.0.1]}]\n", `endpoints[0].addresses[0]: "127.0.0.1" may not be in the loopback range`},
		{"addressType: IPv4\nendpoints: [{addresses: [169.254.1.1]}]\n", `"169.254.1.1" may not be in the link-local range`},
		{"addressType: IPv6\nendpoints: [{addresses: ['fe80::1']}]\n", `"fe80::1" may not be in the link-local range`},
		{"addressType: IPv4\nendpoints: [{addresses: [0.0.0.0]}]\n", `"0.0.0.0" may not be in the unspecified address`},
		{"addressType: IPv4\nendpoints: [{addresses: [224.0.0.5]}]\n", `"224.0.0.5" may not be in the link-local multicast range`},
		{"addressType: IPv4\nendpoints: [{addresses: [10.0.0.1]}, {addresses: [10.0.0.1]}]\nports: [{port: 80}]\n", ""}, // duplicates: as the API server
		{"addressType: IPv4\nports: [{port: 65536}]\n", "ports[0].port: 65536 is not between 1 and 65535"},
	} {
		es := parseOne(t, head+tc.body).obj.(*discovery.EndpointSlice)
		es.Namespace = "default"
		defaultEndpointSlice(es)
		err := validateEndpointSlice(es)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%q: rejected a valid slice: %v", tc.body, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%q: got error %v, want one containing %q", tc.body, err, tc.wantErr)
		}
	}
}

func TestUnknownFieldRejectsOnlyThatObject(t *testing.T) {
	objs, err := parseFile("f.yaml", []byte(service("a", "  clusterIp: 10.96.0.1\n  ports: [{port: 80}]\n")+"---\n"+service("b", "  ports: [{port: 80}]\n")))
	if err != nil || len(objs) != 2 {
		t.Fatalf("%v, %d objects", err, len(objs))
	}
	if objs[0].err == nil || !strings.Contains(objs[0].err.Error(), "clusterIp") {
		t.Errorf("a misspelt field was not reported: %v", objs[0].err)
	}
	if objs[1].err != nil {
		t.Errorf("the good object got %v", objs[1].err)
	}
}
