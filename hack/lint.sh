#!/usr/bin/env bash
# The lint stage of hack/test.sh, to run alone: gofmt, go mod tidy, then golangci-lint
# with .golangci.yml over every package of the main module (tests included).
# golangci-lint's version is pinned in its own module, tools/lint, so none of its
# dependencies reach kproxy's go.mod; the go command downloads and builds it on first
# use and caches the binary. With empty module, build and lint caches the whole script
# took 16 minutes on two cores shared with other builds; warm, under two. Exits
# non-zero on any finding, naming it.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh
ensure_go

fail=0

echo "gofmt -l"
unformatted=$(gofmt -l .)
if [[ -n "$unformatted" ]]; then
	echo "these files need gofmt -w:" >&2
	echo "$unformatted" >&2
	fail=1
fi

for mod in . tools/lint; do
	echo "go mod tidy -diff ($mod)"
	if ! (cd "$mod" && go mod tidy -diff); then
		echo "$mod/go.mod or go.sum is not tidy: run go mod tidy in $mod" >&2
		fail=1
	fi
done

echo "golangci-lint run ./..."
if ! go tool -modfile=tools/lint/go.mod golangci-lint run --config .golangci.yml ./...; then
	fail=1
fi

exit "$fail"
