#!/usr/bin/env bash
# Judges a Service proxy the way Kubernetes judges kube-proxy: brings up the kubelet
# cluster of hack/cluster.sh with the proxy as its DaemonSet, runs the upstream e2e
# suite v1.37.2 on the tests that judge a Service proxy ([sig-network] Services,
# Networking Granular Checks: Services, Conntrack, KubeProxy), writes a JUnit report
# and a summary, and takes the cluster down.
#
#   hack/conformance.sh [--proxy kproxy|upstream] [--mode iptables|nftables]
#                       [--focus REGEX] [--skip REGEX]
#
# Reports go to $KPROXY_CONFORMANCE_DIR (default _output/conformance)/<proxy>-<mode>/:
# junit.xml, e2e.log, summary.md, and the cluster's logs. The skip list below is the
# whole of what this script leaves out, each with its reason.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh
require_root

proxy=kproxy mode=iptables focus="" extra_skip=""
while (($#)); do
  case "$1" in
  --proxy) proxy=$2; shift 2 ;;
  --mode) mode=$2; shift 2 ;;
  --focus) focus=$2; shift 2 ;;
  --skip) extra_skip=$2; shift 2 ;;
  *) echo "usage: hack/conformance.sh [--proxy kproxy|upstream] [--mode iptables|nftables] [--focus RE] [--skip RE]" >&2; exit 2 ;;
  esac
done

# What this cluster cannot do, so neither proxy can pass it:
# - [Disruptive]: restarts nodes, kubelets or the API server over SSH; there is no
#   SSH into these nodes (the suite's provider "local" has no node access).
# - [Feature:SCTPConnectivity]: the kernel of these machines has no SCTP sockets, so
#   the test's servers (agnhost netexec --sctp-port) cannot listen.
skip='\[Disruptive\]|\[Feature:SCTPConnectivity\]'
[[ -n $extra_skip ]] && skip="$skip|$extra_skip"

work=${KPROXY_CLUSTER_DIR:-/var/lib/kproxy-cluster}
report=${KPROXY_CONFORMANCE_DIR:-$PWD/_output/conformance}/$proxy-$mode
rm -rf "$report"
mkdir -p "$report"

start=$SECONDS
trap 'hack/cluster.sh down || true; cp -r "$work/logs" "$report/cluster-logs" 2>/dev/null || true' EXIT
hack/cluster.sh up --proxy "$proxy" --mode "$mode"
echo "== upstream e2e suite against $proxy in $mode mode (report: $report)"
tools=$(hack/build-tools.sh cluster)
"$work/bin/kcluster" e2e --repo "$PWD" --work "$work" --tools "$tools" --bin "$work/bin" \
  --report "$report" --label "$proxy $mode" --skip "$skip" ${focus:+--focus "$focus"}
echo "== done in $((SECONDS - start)) s"
