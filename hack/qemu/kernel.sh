#!/usr/bin/env bash
# Fetches Debian's current linux-image-amd64 kernel (which has IPVS, dummy and the
# netfilter modules as modules, unlike the kernels our CI machines run) and prepares
# it for hack/qemu/boot.sh: vmlinuz plus the modules the IPVS e2e cases need,
# uncompressed, in the order insmod must load them. The result is cached outside the
# repo, keyed by the package version, so only the first run downloads (~70 MB) and
# extracts. Prints the cache directory.
set -euo pipefail
cache_root=${KPROXY_QEMU_CACHE:-/var/cache/kproxy-qemu}

# The modules the guest loads, by name; modprobe --show-depends adds their
# dependencies. Schedulers: every one --ipvs-scheduler accepts in the tests.
MODULES=(
  virtio_pci 9pnet_virtio 9p
  dummy veth bridge
  ip_vs ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_wlc ip_vs_sh ip_vs_dh ip_vs_sed ip_vs_nq xt_ipvs
  nf_conntrack nf_conntrack_netlink nf_nat
  ip_set ip_set_hash_ip ip_set_hash_ipport ip_set_hash_ipportip ip_set_hash_ipportnet ip_set_hash_net ip_set_bitmap_port xt_set
  ip_tables iptable_filter iptable_nat iptable_mangle ip6_tables ip6table_filter ip6table_nat ip6table_mangle
  x_tables xt_tcpudp xt_addrtype xt_comment xt_mark xt_MASQUERADE xt_conntrack xt_nat xt_statistic xt_recent xt_multiport
  ipt_REJECT ip6t_REJECT xt_NFQUEUE
  nf_tables nft_compat nft_chain_nat nft_ct nft_nat nft_masq nft_reject_inet nft_reject_ipv4 nft_reject_ipv6
  nft_fib_inet nft_fib_ipv4 nft_fib_ipv6 nft_numgen nft_limit nft_hash nft_redir
)

need() { command -v "$1" >/dev/null || missing+=("$2"); }
missing=()
need modprobe kmod
need depmod kmod
need dpkg-deb dpkg
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi

# linux-image-amd64 is a metapackage: its one dependency names the real image.
image=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -1)
if [[ -z "$image" ]]; then
  apt-get update -qq >&2
  image=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -1)
fi
[[ -n "$image" ]] || { echo "kernel.sh: cannot resolve linux-image-amd64 to a kernel package" >&2; exit 1; }
kver=${image#linux-image-}
dir=$cache_root/$kver
if [[ -f "$dir/ready" ]]; then
  echo "$dir"
  exit 0
fi

echo "kernel.sh: preparing $image into $dir" >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download "$image" >&2 2>/dev/null) || (cd "$work" && apt-get download "$image" >&2)
dpkg-deb -x "$work"/*.deb "$work/root"
depmod -b "$work/root" "$kver"
rm -rf "$dir.tmp" && mkdir -p "$dir.tmp/modules"
cp "$work/root/boot/vmlinuz-$kver" "$dir.tmp/vmlinuz"
declare -A seen=()
: >"$dir.tmp/modules/order"
for m in "${MODULES[@]}"; do
  while read -r cmd path _; do
    [[ "$cmd" == insmod ]] || continue
    base=$(basename "$path")
    [[ -n "${seen[$base]:-}" ]] && continue
    seen[$base]=1
    case "$path" in
      *.ko.xz) xz -dc "$path" >"$dir.tmp/modules/${base%.xz}"; base=${base%.xz} ;;
      *.ko.zst) zstd -qdc "$path" >"$dir.tmp/modules/${base%.zst}"; base=${base%.zst} ;;
      *) cp "$path" "$dir.tmp/modules/$base" ;;
    esac
    echo "$base" >>"$dir.tmp/modules/order"
  done < <(modprobe -d "$work/root" -S "$kver" --show-depends "$m" 2>/dev/null || { echo "kernel.sh: no module $m in $image" >&2; })
done
touch "$dir.tmp/ready"
rm -rf "$dir" && mv "$dir.tmp" "$dir"
echo "$dir"
