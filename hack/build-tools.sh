#!/usr/bin/env bash
# Builds binaries of Kubernetes v1.37 and etcd v3.6 from the Go module proxy, through
# the separate module in tools/, and caches them outside the repo under
# $KPROXY_TOOLS_CACHE (default /var/cache/kproxy-tools), keyed on the go.mod and
# go.sum files of tools/ and tools/coredns/. Prints the directory on stdout; says what
# it is doing, a line per binary with the time it took, on stderr.
#
#   hack/build-tools.sh             the test binaries: etcd, kube-apiserver, kube-proxy
#                                   (upstream's, for the side-by-side benchmark and the
#                                   conformance comparison); about ten minutes cold
#   hack/build-tools.sh cluster     those, and what the kubelet cluster of
#                                   hack/cluster.sh needs: kubelet, kube-controller-manager,
#                                   kube-scheduler, kubectl, agnhost and
#                                   regression-issue-74839 (test images), CoreDNS (the
#                                   cluster DNS, from its own module), the e2e suite
#                                   (e2e.test) and ginkgo, which runs it in parallel
#   hack/build-tools.sh NAME...     just those binaries
#
# Each binary is built on its own and moved into place whole, so an interrupted build
# costs only the binary it was building.
set -euo pipefail
cd "$(dirname "$0")/../tools"
key=$(cat go.mod go.sum coredns/go.mod coredns/go.sum | sha256sum | cut -c1-16)
dir="${KPROXY_TOOLS_CACHE:-/var/cache/kproxy-tools}/$key"

test_set=(etcd kube-apiserver kube-proxy)
cluster_set=("${test_set[@]}" kubelet kube-controller-manager kube-scheduler kubectl agnhost regression-issue-74839 coredns e2e.test ginkgo)
case "${1:-}" in
"") bins=("${test_set[@]}") ;;
cluster) bins=("${cluster_set[@]}") ;;
*) bins=("$@") ;;
esac

missing() {
  local b
  for b in "${bins[@]}"; do [[ -x "$dir/$b" ]] || echo "$b"; done
}
if [[ -z "$(missing)" ]]; then
  echo "$dir"
  exit 0
fi
# Serialise concurrent callers: the second one waits and then finds the binaries built.
mkdir -p "$dir"
exec 9>"$dir/.build.lock"
if ! flock -n 9; then
  echo "build-tools: another build into $dir is running; waiting for it" >&2
  flock 9
fi

# The Kubernetes binaries report the release they were built from (built from the
# module proxy they would say v0.0.0-master): kubelet's node registration and the e2e
# suite's version checks read it.
version=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
minor=${version#v1.}
minor=${minor%%.*}
vpkg=k8s.io/component-base/version
ldflags="-s -w -X $vpkg.gitVersion=$version -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean"

# build NAME: builds one binary into $dir, saying when it starts and how long it took,
# so that a cold build (minutes of silence from go) does not look hung.
build() {
  local name=$1 start=$SECONDS out="$dir/.$1.tmp"
  echo "build-tools: $name ..." >&2
  case "$name" in
  etcd) go build -trimpath -o "$out" go.etcd.io/etcd/server/v3 >&2 ;;
  e2e.test) go test -c -trimpath -ldflags "$ldflags" -o "$out" k8s.io/kubernetes/test/e2e >&2 ;;
  coredns) (cd coredns && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out" github.com/coredns/coredns) >&2 ;;
  ginkgo) go build -trimpath -o "$out" github.com/onsi/ginkgo/v2/ginkgo >&2 ;;
  agnhost | regression-issue-74839)
    CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out" "k8s.io/kubernetes/test/images/$name" >&2 ;;
  kubelet) CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out" k8s.io/kubernetes/cmd/kubelet >&2 ;;
  kube-apiserver | kube-proxy | kube-controller-manager | kube-scheduler | kubectl)
    go build -trimpath -ldflags "$ldflags" -o "$out" "k8s.io/kubernetes/cmd/$name" >&2 ;;
  *)
    echo "build-tools: no such binary: $name" >&2
    return 2
    ;;
  esac
  mv "$out" "$dir/$name"
  echo "build-tools: $name done in $((SECONDS - start)) s" >&2
}

todo=$(missing | tr '\n' ' ')
total=$SECONDS
echo "build-tools: building ${todo}into $dir (cold, on two cores: about ten minutes for the first Kubernetes binary, a few for each further one)" >&2
# Each go build downloads the modules it needs (the e2e suite's and CoreDNS's are
# many, and the test set needs none of them); its time includes that.
for b in $todo; do
  build "$b"
done
echo "build-tools: all built in $((SECONDS - total)) s" >&2
echo "$dir"
