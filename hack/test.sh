#!/usr/bin/env bash
# Runs every check, in stages: go vet; lint (hack/lint.sh: gofmt, go mod tidy,
# golangci-lint); the unit tests (they build nothing and start no API server); then,
# as root, the tools (kube-apiserver, etcd, upstream kube-proxy, built once and
# cached), the tests that run a real API server, the end-to-end tests that drive kproxy
# with real packets through network namespaces, and the ipvs cases in a qemu guest.
# Without root the root-only stages are left out, and it says so. Exits non-zero on any
# failure. Every go test has an explicit timeout sized for a cold machine.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

stage() { echo "== $* ($(date -u +%H:%M:%S) UTC)"; }

ensure_go
if [ "$(id -u)" -eq 0 ]; then
	ensure_packages
else
	echo "not root: the API-server, e2e and ipvs stages are left out" >&2
fi

stage "go vet ./..."
go vet ./...

stage "lint: gofmt, go mod tidy, golangci-lint (hack/lint.sh)"
bash hack/lint.sh

stage "unit tests"
# Everything but the e2e package. Tests that need the tools skip here, naming the
# stage below that runs them ($KPROXY_TOOLS_DIR is not set yet).
(unset KPROXY_TOOLS_DIR; go test -count=1 -timeout 10m $(go list ./... | grep -v '/test/e2e$'))

stage "fuzzing: each target for a short fixed time (hack/fuzz.sh)"
bash hack/fuzz.sh

if [ "$(id -u)" -ne 0 ]; then
	exit 0
fi

stage "test binaries: etcd, kube-apiserver, upstream kube-proxy (hack/build-tools.sh)"
# A failed build stops the run here with the build's own error.
KPROXY_TOOLS_DIR=$(hack/build-tools.sh)
export KPROXY_TOOLS_DIR

stage "tests with a real API server (test/apiserver, the scale benchmark's smoke run)"
go test -count=1 -timeout 20m ./test/apiserver ./bench/scale

stage "e2e tests (real packets through network namespaces; every mode)"
go test -count=1 -v -timeout 30m ./test/e2e/...

# This kernel has no IPVS: the ipvs mode's e2e cases run inside a qemu guest that
# boots Debian's kernel with its ip_vs modules (software emulation, a few minutes).
stage "ipvs mode e2e in a qemu guest"
# Its closing "N passed, N failed" line is the last line of the run.
bash hack/test-ipvs.sh
