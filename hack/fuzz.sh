#!/usr/bin/env bash
# Runs every fuzz target for a short fixed time (KPROXY_FUZZTIME, default 10s each):
# the parsers of input kproxy does not control (manifests, the config file, the
# dumps `kproxy trace` reads, the netlink answers of nftables, ctnetlink and nfacct)
# and the iptables fake. The seed corpora, and every crash
# found so far (testdata/fuzz/<target>/), also run in the unit tests. A new crash
# fails the run and leaves its input under testdata/fuzz/ to be checked in with the fix.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh
ensure_go

fuzztime=${KPROXY_FUZZTIME:-10s}
targets=(
  "./internal/source/manifests FuzzParseAndValidate"
  "./internal/config FuzzDecodeConfig"
  "./internal/trace FuzzParseIPTablesSave"
  "./internal/trace FuzzParseNFTJSON"
  "./internal/iptables FuzzFakeRestore"
  "./internal/nftables FuzzRuleChain"
  "./internal/conntrack FuzzParseFlow"
  "./internal/nfacct FuzzDecode"
)
for t in "${targets[@]}"; do
  read -r pkg name <<<"$t"
  echo "fuzz $name ($pkg, $fuzztime)"
  go test -run '^$' -fuzz "^$name\$" -fuzztime "$fuzztime" -parallel 2 "$pkg"
done
