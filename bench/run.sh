#!/usr/bin/env bash
# The scale benchmark of issue 7: kproxy against upstream kube-proxy v1.37, in
# iptables and nftables modes, on 10,000 Services x 10 endpoints by default.
# Needs root. Flags go to bench/cmd/scale (-services, -endpoints, -smoke, ...);
# the results table is printed and written to bench/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
	echo "bench/run.sh: must run as root (network namespaces, iptables, nftables)" >&2
	exit 1
fi
exec go run ./bench/cmd/scale "$@"
