#!/usr/bin/env bash
# A real two-node Kubernetes v1.37 cluster on this machine, in network namespaces of
# its own (test/kubecluster): etcd, kube-apiserver, kube-controller-manager and
# kube-scheduler; two nodes with containerd, runc, CNI and a kubelet each; the proxy
# as the DaemonSet of deploy/.
#
#   hack/cluster.sh up [--proxy kproxy|upstream] [--mode iptables|nftables]
#   hack/cluster.sh status
#   hack/cluster.sh kubectl ARGS...     kubectl against the cluster
#   hack/cluster.sh down
#
# Needs root. Installs containerd, runc, the CNI plugins and mmdebstrap from Debian's
# packages, builds the Kubernetes binaries once (hack/build-tools.sh cluster: about
# an hour cold on two cores, cached) and the images (cached root filesystems). The cluster lives
# in $KPROXY_CLUSTER_DIR (default /var/lib/kproxy-cluster): logs/ has every
# component's log. The root filesystems outlive it in $KPROXY_CLUSTER_CACHE (default
# /var/cache/kproxy-cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh
require_root

work=${KPROXY_CLUSTER_DIR:-/var/lib/kproxy-cluster}
cache=${KPROXY_CLUSTER_CACHE:-/var/cache/kproxy-cluster}
bin=$work/bin
pidfile=$work/kcluster.pid

ensure_cluster_packages() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  command -v nsenter >/dev/null || missing+=(util-linux)
  if ((${#missing[@]})); then
    echo "installing Debian packages: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
  # Debian's containerd package starts a containerd of the host's own; the cluster's
  # run their own, and need none of it.
}

running() { [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

build() {
  ensure_go
  ensure_packages
  ensure_cluster_packages
  echo "== Kubernetes binaries (hack/build-tools.sh cluster)" >&2
  tools=$(hack/build-tools.sh cluster)
  echo "== kproxy, pause and kcluster" >&2
  mkdir -p "$bin"
  CGO_ENABLED=0 go build -trimpath -o "$bin/kproxy" ./cmd/kproxy
  CGO_ENABLED=0 go build -trimpath -o "$bin/pause" ./test/kubecluster/pause
  go build -o "$bin/kcluster" ./test/kubecluster/cmd/kcluster
}

cmd=${1:-}
shift || true
case "$cmd" in
up)
  if running; then
    echo "a cluster is already up (supervisor pid $(cat "$pidfile")); hack/cluster.sh down first" >&2
    exit 1
  fi
  build
  rm -rf "$work/logs" "$work/node1" "$work/node2" "$work/etcd" "$work/pki"
  mkdir -p "$work"
  echo "== cluster up (log: $work/kcluster.log)" >&2
  # The supervisor holds every process of the cluster and takes it down on SIGTERM.
  setsid nohup "$bin/kcluster" up --repo "$PWD" --work "$work" --cache "$cache" --tools "$tools" --bin "$bin" "$@" \
    >"$work/kcluster.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  tail -n +1 -f "$work/kcluster.log" --pid=$! >&2 &
  tailpid=$!
  while ! [[ -f $work/ready || -f $work/failed ]] && running; do sleep 1; done
  kill "$tailpid" 2>/dev/null || true
  if [[ -f $work/ready ]]; then
    echo "cluster up: hack/cluster.sh kubectl get pods -A" >&2
    exit 0
  fi
  echo "cluster failed to come up: $(cat "$work/failed" 2>/dev/null || echo 'supervisor exited')" >&2
  exit 1
  ;;
down)
  if running; then
    pid=$(cat "$pidfile")
    kill -TERM "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 1; done
  elif [[ -x $bin/kcluster ]]; then
    "$bin/kcluster" down --repo "$PWD" --work "$work" --bin "$bin"
  fi
  rm -f "$pidfile"
  echo "cluster down" >&2
  ;;
status)
  running || { echo "no cluster is up" >&2; exit 1; }
  echo "up: $(cat "$work/ready" 2>/dev/null || echo 'starting')"
  "$bin/kcluster" status --work "$work"
  ;;
kubectl)
  running || { echo "no cluster is up" >&2; exit 1; }
  tools=$(hack/build-tools.sh cluster)
  exec ip netns exec kc-cp "$tools/kubectl" --kubeconfig "$work/admin.kubeconfig" "$@"
  ;;
*)
  echo "usage: hack/cluster.sh up|down|status|kubectl" >&2
  exit 2
  ;;
esac
