#!/usr/bin/env bash
# Demo of kproxy on a cluster made of network namespaces: builds kproxy and
# echoserver, runs test/e2e/cmd/demo on the manifests in examples/ and prints how
# requests spread over the endpoints. Run as root on Debian. Everything it creates
# is removed at the end, also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

if [ "$(id -u)" -ne 0 ]; then
	echo "hack/demo.sh must run as root (it creates network namespaces)" >&2
	exit 1
fi
ensure_packages
ensure_go
mkdir -p bin
echo "building kproxy and echoserver ..."
go build -o bin/kproxy ./cmd/kproxy
go build -o bin/echoserver ./test/echoserver
go build -o bin/demo ./test/e2e/cmd/demo
# exec keeps the demo in the foreground so Ctrl-C reaches it and it tears down.
exec bin/demo --kproxy bin/kproxy --echoserver bin/echoserver --examples examples "$@"
