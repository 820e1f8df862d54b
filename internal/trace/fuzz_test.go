package trace

import (
	"os"
	"testing"
)

func seedFile(f *testing.F, path string) {
	f.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
}

// FuzzParseIPTablesSave: `kproxy trace --from-file` reads dumps a user hands it; a
// malformed one must give an error, never a panic.
func FuzzParseIPTablesSave(f *testing.F) {
	seedFile(f, "testdata/upstream-2.5.rules")
	f.Add([]byte("*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -m comment --comment \"a \\\"b\\\"\" -j ACCEPT\nCOMMIT\n"))
	f.Fuzz(func(_ *testing.T, data []byte) {
		_, _ = parseIPTablesSave(data)
	})
}

// FuzzParseNFTJSON: the same for `nft -j list ruleset` output.
func FuzzParseNFTJSON(f *testing.F) {
	seedFile(f, "testdata/nft-reference.json")
	f.Add([]byte(`{"nftables":[{"table":{"family":"ip","name":"kube-proxy"}}]}`))
	f.Fuzz(func(_ *testing.T, data []byte) {
		_, _ = parseNFTJSON(data, "ip", "kube-proxy")
	})
}
