#!/usr/bin/env bash
# Builds the test-only binaries (kube-apiserver v1.37, etcd v3.6) from the Go module proxy,
# through the separate module in tools/, and caches them outside the repo: a cold build
# takes about 10 minutes on two cores, a cached one nothing. Prints the directory.
set -euo pipefail
cd "$(dirname "$0")/../tools"
key=$(cat go.mod go.sum | sha256sum | cut -c1-16)
dir="${KPROXY_TOOLS_CACHE:-/var/cache/kproxy-tools}/$key"
if [[ -x "$dir/kube-apiserver" && -x "$dir/etcd" ]]; then
  echo "$dir"
  exit 0
fi
mkdir -p "$dir.tmp"
echo "building etcd and kube-apiserver into $dir (cold: ~10 minutes)" >&2
go build -trimpath -o "$dir.tmp/etcd" go.etcd.io/etcd/server/v3 >&2
go build -trimpath -o "$dir.tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver >&2
rm -rf "$dir"
mv "$dir.tmp" "$dir"
echo "$dir"
