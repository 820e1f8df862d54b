#!/usr/bin/env bash
# Runs every check: go vet, the unit tests, and the end-to-end tests that drive
# kproxy with real packets through network namespaces (those need root; without it
# they skip and say so). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

ensure_go
if [ "$(id -u)" -eq 0 ]; then
	ensure_packages
else
	echo "not root: the e2e tests will skip" >&2
fi

echo "== go vet ./..."
go vet ./...

echo "== unit tests"
# Everything except the e2e package, which runs below with its own timeout.
go test -count=1 $(go list ./... | grep -v '/test/e2e$')

if [ "$(id -u)" -eq 0 ]; then
	# The API-server tests run a real kube-apiserver and etcd, built once from the Go
	# module proxy and cached (about ten minutes the first time).
	echo "== test binaries (kube-apiserver, etcd, kube-proxy)"
	KPROXY_TOOLS_DIR=$(hack/build-tools.sh)
	export KPROXY_TOOLS_DIR
fi

echo "== e2e tests (real packets through network namespaces; every mode)"
go test -count=1 -v -timeout 30m ./test/e2e/...

if [ "$(id -u)" -eq 0 ]; then
	# This kernel has no IPVS: the ipvs mode's e2e cases run inside a qemu guest that
	# boots Debian's kernel with its ip_vs modules (software emulation, a few minutes).
	echo "== ipvs mode e2e in a qemu guest"
	bash hack/test-ipvs.sh
fi
