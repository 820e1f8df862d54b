#!/usr/bin/env bash
# Runs the e2e cases in ipvs mode on a real kernel with IPVS: the machine's own kernel
# has none, so this boots Debian's linux-image-amd64 under qemu (software emulation
# unless /dev/kvm exists; see hack/qemu/) with kproxy, echoserver and the e2e test
# binary, runs TestKproxy with KPROXY_E2E_MODES=ipvs inside, and prints a table of the
# cases and a closing "N passed, N failed" line. Exits non-zero on any failure.
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
/bin/busybox --list 2>/dev/null | grep -qx insmod || missing+=(busybox-static)
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

start=$(date +%s)
share=$(mktemp -d /tmp/kproxy-ipvs-XXXXXX)
trap 'rm -rf "$share"' EXIT
mkdir -p "$share/bin"
echo "== building static binaries for the guest"
CGO_ENABLED=0 go build -o "$share/bin/kproxy" ./cmd/kproxy
CGO_ENABLED=0 go build -o "$share/bin/echoserver" ./test/echoserver
CGO_ENABLED=0 go test -c -o "$share/e2e.test" ./test/e2e
cat >"$share/guest-run.sh" <<'GUEST'
cd /share
export KPROXY_E2E_MODES=ipvs KPROXY_E2E_BIN_DIR=/share/bin HOME=/tmp
start=$(cut -d' ' -f1 /proc/uptime)
./e2e.test -test.v -test.run "${KPROXY_IPVS_RUN:-^TestKproxy\$}" -test.timeout 9m >/share/e2e.log 2>&1
echo "exit=$?" >/share/e2e.status
echo "guest: e2e finished after $(cut -d' ' -f1 /proc/uptime)s of uptime (started at ${start}s)"
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
if [[ -n "${KPROXY_IPVS_LOG:-}" ]]; then cp "$share/e2e.log" "$KPROXY_IPVS_LOG"; fi

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
