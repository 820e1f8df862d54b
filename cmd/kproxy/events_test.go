package main

import "testing"

func TestServiceRef(t *testing.T) {
	for _, tc := range []struct {
		in             []string
		wantNS, wantNm string
	}{
		{[]string{"e2e/clash:http", "e2e/other"}, "e2e", "clash"},
		{[]string{"ns1/web"}, "ns1", "web"},
	} {
		r := serviceRef(tc.in)
		if r == nil || r.Kind != "Service" || r.Namespace != tc.wantNS || r.Name != tc.wantNm {
			t.Errorf("serviceRef(%v) = %+v, want Service %s/%s", tc.in, r, tc.wantNS, tc.wantNm)
		}
	}
	for _, in := range [][]string{nil, {"no-slash"}} {
		if r := serviceRef(in); r != nil {
			t.Errorf("serviceRef(%v) = %+v, want nil", in, r)
		}
	}
}
