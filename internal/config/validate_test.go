package config

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestValidationErrorsNameFlagAndValue(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--proxy-mode=kernelspace"}, `invalid --proxy-mode "kernelspace": must be one of iptables, nftables, ipvs, userspace`},
		{[]string{"--iptables-sync-period=0"}, `invalid --iptables-sync-period "0s": must be greater than 0`},
		{[]string{"--sync-period=0"}, `invalid --sync-period "0s": must be greater than 0`},
		{[]string{"--iptables-min-sync-period=-1s"}, `invalid --iptables-min-sync-period "-1s": must not be negative`},
		{[]string{"--iptables-sync-period=10s", "--iptables-min-sync-period=20s"}, `invalid --iptables-min-sync-period "20s": must not be greater than the sync period 10s`},
		{[]string{"--proxy-mode=ipvs", "--ipvs-sync-period=0"}, `invalid --ipvs-sync-period "0s"`},
		{[]string{"--config-sync-period=0"}, `invalid --config-sync-period "0s"`},
		{[]string{"--iptables-masquerade-bit=32"}, `invalid --iptables-masquerade-bit "32": must be within [0, 31]`},
		{[]string{"--iptables-masquerade-bit=-1"}, `invalid --iptables-masquerade-bit "-1"`},
		{[]string{"--oom-score-adj=1001"}, `invalid --oom-score-adj "1001"`},
		{[]string{"--conntrack-min=-1"}, `invalid --conntrack-min "-1": must not be negative`},
		{[]string{"--conntrack-udp-timeout=-1s"}, `invalid --conntrack-udp-timeout "-1s"`},
		{[]string{"--kube-api-burst=-1"}, `invalid --kube-api-burst "-1"`},
		{[]string{"--healthz-bind-address=localhost:10256"}, `invalid --healthz-bind-address "localhost:10256"`},
		{[]string{"--metrics-bind-address=127.0.0.1:0"}, `invalid --metrics-bind-address "127.0.0.1:0": port 0 is outside 1-65535`},
		{[]string{"--metrics-bind-address=127.0.0.1:70000"}, `invalid --metrics-bind-address "127.0.0.1:70000"`},
		{[]string{"--bind-address=not-an-ip"}, `invalid --bind-address "not-an-ip"`},
		{[]string{"--nodeport-addresses=10.0.0.0/8,eth0"}, `invalid --nodeport-addresses "eth0": want a CIDR or one of the keywords primary, localhost, all`},
		{[]string{"--nodeport-addresses=primary,primary"}, `invalid --nodeport-addresses "primary": keyword given twice`},
		{[]string{"--cluster-cidr=10.0.0.0/8,10.1.0.0/16"}, `invalid --cluster-cidr "10.0.0.0/8,10.1.0.0/16": two CIDRs must be a dual-stack pair`},
		{[]string{"--cluster-cidr=10.0.0.0/8,fd00::/48,fd01::/48"}, `invalid --cluster-cidr "10.0.0.0/8,fd00::/48,fd01::/48": at most two CIDRs`},
		{[]string{"--cluster-cidr=10.0.0.0"}, `invalid --cluster-cidr "10.0.0.0"`},
		{[]string{"--detect-local-mode=Magic"}, `invalid --detect-local-mode "Magic"`},
		{[]string{"--detect-local-mode=BridgeInterface"}, `invalid --pod-bridge-interface "": must be set when detectLocalMode is BridgeInterface`},
		{[]string{"--detect-local-mode=InterfaceNamePrefix", "--pod-interface-name-prefix= "}, `invalid --pod-interface-name-prefix " "`},
		{[]string{"--ipvs-exclude-cidrs=10.0.0.0/8,bogus"}, `invalid --ipvs-exclude-cidrs "bogus"`},
		{[]string{"--service-cluster-ip-range=10.96.0.0/12,10.100.0.0/16"}, `invalid --service-cluster-ip-range "10.96.0.0/12,10.100.0.0/16"`},
		{[]string{"--service-cluster-ip-range="}, `invalid --service-cluster-ip-range "": must not be empty`},
		{[]string{"--service-node-port-range=32767-30000"}, `invalid --service-node-port-range "32767-30000": end 30000 is below start 32767`},
		{[]string{"--service-node-port-range=30000"}, `invalid --service-node-port-range "30000": want the form A-B`},
		{[]string{"--service-node-port-range=0-100"}, `invalid --service-node-port-range "0-100"`},
		{[]string{"--service-node-port-range=30000-70000"}, `invalid --service-node-port-range "30000-70000"`},
		{[]string{"--state-dir="}, `invalid --state-dir ""`},
		{[]string{"--proc-sys-dir="}, `invalid --proc-sys-dir ""`},
		{[]string{"--hostname-override=  "}, `invalid --hostname-override "  "`},
		// pflag's own type checks also name the flag.
		{[]string{"--iptables-sync-period=soon"}, `--iptables-sync-period`},
		{[]string{"--feature-gates=Foo"}, `--feature-gates`},
		{[]string{"--version=maybe"}, `--version`},
	}
	for _, tc := range cases {
		_, err := parseArgs(tc.args)
		if err == nil {
			t.Errorf("%q: no error, want %q", tc.args, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error\n  %v\nwant it to contain\n  %s", tc.args, err, tc.want)
		}
	}
}

func TestValidationReportsAllErrors(t *testing.T) {
	_, err := parseArgs([]string{"--iptables-masquerade-bit=40", "--service-node-port-range=x", "--proxy-mode=bad"})
	if err == nil {
		t.Fatal("no error")
	}
	for _, f := range []string{"--iptables-masquerade-bit", "--service-node-port-range", "--proxy-mode"} {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error %q does not mention %s", err, f)
		}
	}
}

func TestDualStackClusterCIDR(t *testing.T) {
	for _, tc := range []struct {
		arg  string
		want []netip.Prefix
	}{
		{"10.244.0.0/16,fd00:10:244::/56", []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:10:244::/56")}},
		{"fd00:10:244::/56, 10.244.0.0/16", []netip.Prefix{netip.MustParsePrefix("fd00:10:244::/56"), netip.MustParsePrefix("10.244.0.0/16")}},
		// Host bits are cleared and leading zeros read as decimal, as upstream's sloppy parser does.
		{"010.244.1.2/16", []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}},
	} {
		c := mustParse(t, "--cluster-cidr="+tc.arg)
		if !reflect.DeepEqual(c.ClusterCIDRs, tc.want) {
			t.Errorf("--cluster-cidr=%s: got %v, want %v", tc.arg, c.ClusterCIDRs, tc.want)
		}
	}
}

func TestParsePortRange(t *testing.T) {
	good := []struct {
		in   string
		want PortRange
	}{
		{"30000-32767", PortRange{30000, 2768}},
		{"1-65535", PortRange{1, 65535}},
		{" 8080-8080 ", PortRange{8080, 1}},
	}
	for _, tc := range good {
		got, err := ParsePortRange(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParsePortRange(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
			continue
		}
		if again, _ := ParsePortRange(got.String()); again != got {
			t.Errorf("String() %q does not parse back to %v", got.String(), got)
		}
	}
	for _, bad := range []string{"", "30000", "a-b", "30000-", "-5", "0-10", "10-65536", "200-100", "1-2-3"} {
		if r, err := ParsePortRange(bad); err == nil {
			t.Errorf("ParsePortRange(%q) = %v, want an error", bad, r)
		}
	}
}

func TestPortRangeContainsAndString(t *testing.T) {
	r := PortRange{Base: 30000, Size: 2768}
	for p, want := range map[int]bool{29999: false, 30000: true, 31000: true, 32767: true, 32768: false} {
		if r.Contains(p) != want {
			t.Errorf("%v.Contains(%d) = %v, want %v", r, p, !want, want)
		}
	}
	if r.String() != "30000-32767" {
		t.Errorf("String() = %q", r.String())
	}
	if (PortRange{}).Contains(0) || (PortRange{}).String() != "" {
		t.Errorf("zero PortRange should contain nothing and print empty")
	}
}

func TestParseAddrSloppy(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1":      "10.0.0.1",
		"172.30.0.041":  "172.30.0.41",
		" 192.168.1.1 ": "192.168.1.1",
		"fd00::1":       "fd00::1",
	} {
		a, err := parseAddrSloppy(in)
		if err != nil || a.String() != want {
			t.Errorf("parseAddrSloppy(%q) = %v, %v; want %s", in, a, err, want)
		}
	}
	for _, bad := range []string{"", "1.2.3", "1.2.3.256", "1.2.3.-1", "1.2.3.+4", "host", "1.2.3.4.5"} {
		if a, err := parseAddrSloppy(bad); err == nil {
			t.Errorf("parseAddrSloppy(%q) = %v, want an error", bad, a)
		}
	}
}
