#!/usr/bin/env bash
# Builds the test-only binaries (kube-apiserver v1.37, etcd v3.6, and upstream kube-proxy
# v1.37 for the side-by-side benchmark) from the Go module proxy, through the separate
# module in tools/, and caches them outside the repo under $KPROXY_TOOLS_CACHE (default
# /var/cache/kproxy-tools), keyed on tools/go.mod and go.sum. A cold build takes about
# ten minutes on two cores, a cached one nothing. Prints the directory on stdout; says
# what it is doing, a line per step with the time it took, on stderr.
set -euo pipefail
cd "$(dirname "$0")/../tools"
key=$(cat go.mod go.sum | sha256sum | cut -c1-16)
dir="${KPROXY_TOOLS_CACHE:-/var/cache/kproxy-tools}/$key"
bins=(etcd kube-apiserver kube-proxy)
built() {
  local b
  for b in "${bins[@]}"; do [[ -x "$dir/$b" ]] || return 1; done
}
if built; then
  echo "$dir"
  exit 0
fi
# Serialise concurrent callers: the second one waits and then finds the binaries built.
mkdir -p "$(dirname "$dir")"
exec 9>"$(dirname "$dir")/.build.lock"
if ! flock -n 9; then
  echo "build-tools: another build into $(dirname "$dir") is running; waiting for it" >&2
  flock 9
fi
if built; then
  echo "$dir"
  exit 0
fi

# step NAME CMD...: runs one step of the build, saying when it starts and how long it
# took, so that a cold build (minutes of silence from go build) does not look hung.
step() {
  local name=$1 start=$SECONDS
  shift
  echo "build-tools: $name ..." >&2
  "$@" >&2
  echo "build-tools: $name done in $((SECONDS - start)) s" >&2
}

total=$SECONDS
rm -rf "$dir.tmp"
mkdir -p "$dir.tmp"
echo "build-tools: building ${bins[*]} into $dir (cold: about ten minutes on two cores)" >&2
step "downloading modules" go mod download
step "etcd" go build -trimpath -o "$dir.tmp/etcd" go.etcd.io/etcd/server/v3
step "kube-apiserver" go build -trimpath -o "$dir.tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
step "kube-proxy" go build -trimpath -o "$dir.tmp/kube-proxy" k8s.io/kubernetes/cmd/kube-proxy
rm -rf "$dir"
mv "$dir.tmp" "$dir"
echo "build-tools: all built in $((SECONDS - total)) s" >&2
echo "$dir"
