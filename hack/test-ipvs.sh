#!/usr/bin/env bash
# Runs the e2e cases in ipvs mode on a real kernel with IPVS: the machine's own kernel
# has none, so this boots Debian's linux-image-amd64 under qemu (software emulation
# unless /dev/kvm exists; see hack/qemu/) with kproxy, echoserver and the e2e test
# binary, runs TestKproxy with KPROXY_E2E_MODES=ipvs inside, and prints a table of the
# cases and a closing "N passed, N failed" line. Exits non-zero on any failure.
# Environment: KPROXY_IPVS_RUN (-test.run pattern), KPROXY_IPVS_LOG=FILE (keep the e2e
# log, and kproxy's logs in FILE.kproxy/), KPROXY_IPVS_TIME_SCALE (the guest's
# KPROXY_E2E_TIME_SCALE, default 4: its CPU is emulated), KPROXY_IPVS_TIMEOUT (seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh
require_root
ensure_go
ensure_packages
missing=()
command -v ipset >/dev/null || missing+=(ipset)
command -v ipvsadm >/dev/null || missing+=(ipvsadm)
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v modprobe >/dev/null || missing+=(kmod)
command -v cpio >/dev/null || missing+=(cpio)
/bin/busybox --list 2>/dev/null | grep -x insmod >/dev/null || missing+=(busybox-static)
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

start=$(date +%s)
share=$(mktemp -d /tmp/kproxy-ipvs-XXXXXX)
trap 'rm -rf "$share"' EXIT
mkdir -p "$share/bin"
# The guest's static binaries are cached outside the repo, keyed on every source file
# they can depend on and the toolchain, so a warm run builds nothing. The builds use
# the host's Go build cache, so a changed file rebuilds only what depends on it.
cache_root=${KPROXY_QEMU_CACHE:-/var/cache/kproxy-qemu}
key=$( (go env GOVERSION; git ls-files -co --exclude-standard -- go.mod go.sum cmd internal test |
  sort | xargs -d '\n' sha256sum 2>/dev/null || true) | sha256sum | cut -c1-16)
bins=$cache_root/bin/$key
if [[ -f "$bins/ready" && -x "$bins/kproxy" && -x "$bins/echoserver" && -x "$bins/e2e.test" ]]; then
  touch "$bins" # the pruning below keeps the most recently used
  echo "== static binaries for the guest: cached ($bins)"
else
  echo "== building static binaries for the guest"
  rm -rf "$bins.tmp" && mkdir -p "$bins.tmp"
  # Stripped: the guest reads them over 9p, under emulation.
  CGO_ENABLED=0 go build -ldflags='-s -w' -o "$bins.tmp/kproxy" ./cmd/kproxy
  CGO_ENABLED=0 go build -ldflags='-s -w' -o "$bins.tmp/echoserver" ./test/echoserver
  CGO_ENABLED=0 go test -c -ldflags='-s -w' -o "$bins.tmp/e2e.test" ./test/e2e
  touch "$bins.tmp/ready"
  rm -rf "$bins" && mv "$bins.tmp" "$bins"
  # Keep the three newest builds.
  ls -1dt "$cache_root"/bin/*/ 2>/dev/null | tail -n +4 | xargs -r rm -rf
fi
cp "$bins/kproxy" "$bins/echoserver" "$share/bin/"
cp "$bins/e2e.test" "$share/e2e.test"
# The guest's settings, sourced by guest-run.sh (the guest does not inherit this
# environment). The time scale stretches the e2e waits: the guest's CPU is emulated.
{
  printf 'KPROXY_IPVS_RUN=%q\n' "${KPROXY_IPVS_RUN:-^TestKproxy\$}"
  printf 'KPROXY_E2E_TIME_SCALE=%q\n' "${KPROXY_IPVS_TIME_SCALE:-4}"
} >"$share/guest.env"
cat >"$share/guest-run.sh" <<'GUEST'
cd /share
. /share/guest.env
# Run the binaries from the guest's tmpfs: a Go binary started from the 9p share
# pages itself in over 9p at each start (~0.5 s under emulation, ~0.1 s from tmpfs),
# and the cases start the echoserver client for every request.
mkdir -p /tmp/kproxy-bin
cp /share/bin/kproxy /share/bin/echoserver /share/e2e.test /tmp/kproxy-bin/
mkdir -p /share/kproxy-logs
export KPROXY_E2E_MODES=ipvs KPROXY_E2E_BIN_DIR=/tmp/kproxy-bin KPROXY_E2E_TIME_SCALE HOME=/tmp
export KPROXY_E2E_LOG_DIR=/share/kproxy-logs
start=$(cut -d' ' -f1 /proc/uptime)
/tmp/kproxy-bin/e2e.test -test.v -test.run "$KPROXY_IPVS_RUN" -test.timeout 9m >/share/e2e.log 2>&1
echo "exit=$?" >/share/e2e.status
echo "guest: e2e finished after $(cut -d' ' -f1 /proc/uptime)s of uptime (started at ${start}s, time scale ${KPROXY_E2E_TIME_SCALE})"
GUEST
built=$(date +%s)

echo "== booting the guest (kernel from hack/qemu/kernel.sh)"
set +e
hack/qemu/boot.sh "$share" "${KPROXY_IPVS_TIMEOUT:-780}" >"$share/console.log" 2>&1
boot_rc=$?
set -e
done_at=$(date +%s)
grep -a '^guest:' "$share/console.log" || true
if [[ ! -f "$share/e2e.status" ]]; then
  echo "the guest did not finish the e2e run (qemu exit $boot_rc); console tail:" >&2
  tail -n 60 "$share/console.log" >&2
  [[ -f "$share/e2e.log" ]] && tail -n 80 "$share/e2e.log" >&2
  echo "ipvs: 0 passed, 1 failed"
  exit 1
fi
if [[ -n "${KPROXY_IPVS_LOG:-}" ]]; then
  cp "$share/e2e.log" "$KPROXY_IPVS_LOG"
  # kproxy's own logs from the guest, beside it.
  mkdir -p "$KPROXY_IPVS_LOG.kproxy" && cp "$share"/kproxy-logs/* "$KPROXY_IPVS_LOG.kproxy/" 2>/dev/null || true
fi

# The table: one row per case of TestKproxy/ipvs, with the skip reason where skipped.
echo "== e2e cases in ipvs mode (qemu guest)"
awk '
  /^ *--- (PASS|FAIL|SKIP): TestKproxy\/ipvs\// {
    split($3, p, "/"); name = p[3]; res = $2; sub(":", "", res); order[++n] = name; result[name] = res
  }
  /not applicable in ipvs mode:/ { line = $0; sub(/.*not applicable in ipvs mode: /, "", line); why[cur] = line }
  /^=== RUN   TestKproxy\/ipvs\// { split($3, p, "/"); cur = p[3] }
  END {
    for (i = 1; i <= n; i++) { nm = order[i]; printf "%-28s %s%s\n", nm, result[nm], (why[nm] != "" ? "  (" why[nm] ")" : "") }
  }' "$share/e2e.log"
passed=$(grep -Ec '^ *--- PASS: TestKproxy/ipvs/' "$share/e2e.log" || true)
failed=$(grep -Ec '^ *--- FAIL: TestKproxy/ipvs/' "$share/e2e.log" || true)
skipped=$(grep -Ec '^ *--- SKIP: TestKproxy/ipvs/' "$share/e2e.log" || true)
status=$(cat "$share/e2e.status")
if [[ "$failed" -gt 0 || "$status" != "exit=0" ]]; then
  grep -a -B2 -A40 -- '--- FAIL' "$share/e2e.log" | head -n 300 >&2 || true
  grep -aq -- '--- FAIL\|^FAIL\|panic:' "$share/e2e.log" || tail -n 60 "$share/e2e.log" >&2
fi
echo "build $((built - start))s, boot and test $((done_at - built))s"
if [[ "$status" != "exit=0" && "$failed" -eq 0 ]]; then failed=1; fi
echo "ipvs: $passed passed, $failed failed, $skipped skipped"
[[ "$failed" -eq 0 && "$passed" -gt 0 ]]
