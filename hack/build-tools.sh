#!/usr/bin/env bash
# Builds the test-only binaries (kube-apiserver v1.37, etcd v3.6, and upstream kube-proxy
# v1.37 for the side-by-side benchmark) from the Go module proxy,
# through the separate module in tools/, and caches them outside the repo: a cold build
# takes about 10 minutes on two cores, a cached one nothing. Prints the directory.
set -euo pipefail
cd "$(dirname "$0")/../tools"
key=$(cat go.mod go.sum | sha256sum | cut -c1-16)
dir="${KPROXY_TOOLS_CACHE:-/var/cache/kproxy-tools}/$key"
if [[ -x "$dir/kube-apiserver" && -x "$dir/etcd" && -x "$dir/kube-proxy" ]]; then
  echo "$dir"
  exit 0
fi
# Serialise concurrent callers (tests in parallel packages): the second one waits and
# then finds the binaries built.
mkdir -p "$(dirname "$dir")"
exec 9>"$(dirname "$dir")/.build.lock"
flock 9
if [[ -x "$dir/kube-apiserver" && -x "$dir/etcd" && -x "$dir/kube-proxy" ]]; then
  echo "$dir"
  exit 0
fi
rm -rf "$dir.tmp"
mkdir -p "$dir.tmp"
echo "building etcd, kube-apiserver and kube-proxy into $dir (cold: ~10 minutes)" >&2
go build -trimpath -o "$dir.tmp/etcd" go.etcd.io/etcd/server/v3 >&2
go build -trimpath -o "$dir.tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver >&2
go build -trimpath -o "$dir.tmp/kube-proxy" k8s.io/kubernetes/cmd/kube-proxy >&2
rm -rf "$dir"
mv "$dir.tmp" "$dir"
echo "$dir"
