#!/usr/bin/env bash
# Boots Debian's kernel (from hack/qemu/kernel.sh) under qemu-system-x86_64 with a
# busybox initramfs, the host's /usr and /etc shared read-only and SHARE_DIR shared
# read-write (all over 9p), and runs SHARE_DIR/guest-run.sh inside. The guest has no network
# device: nothing it does can leave it. Serial console output goes to stdout.
# Usage: boot.sh SHARE_DIR [TIMEOUT_SECONDS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
share=$(cd "$1" && pwd)
timeout_s=${2:-900}

missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
[[ -x /bin/busybox ]] && /bin/busybox --list | grep -x insmod >/dev/null || missing+=(busybox-static)
command -v cpio >/dev/null || missing+=(cpio)
if ((${#missing[@]})); then
  echo "installing Debian packages: ${missing[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
if ! file -L /bin/busybox 2>/dev/null | grep -q "statically linked"; then
  ldd /bin/busybox >/dev/null 2>&1 && { echo "boot.sh: /bin/busybox is not static; install busybox-static" >&2; exit 1; }
fi

kdir=$("$here/kernel.sh")
# The initramfs depends only on the kernel's modules and this directory's init: cache it
# beside the kernel.
key=$(cat "$here/init" "$kdir/modules/order" /bin/busybox | sha256sum | cut -c1-12)
initrd=$kdir/initramfs-$key.cpio.gz
if [[ ! -f "$initrd" ]]; then
  root=$(mktemp -d)
  mkdir -p "$root"/{.bb,etc,modules,proc,sys,dev,tmp,run,usr,share,var}
  # busybox stays out of /bin: the host's symlinks (/usr/sbin/ip -> /bin/ip) must
  # reach the host's binaries, not applets.
  cp /bin/busybox "$root/.bb/busybox"
  for a in $(/bin/busybox --list); do [[ "$a" == busybox ]] || ln -s busybox "$root/.bb/$a"; done
  # Merged /usr: the host's binaries expect their loader and libraries here.
  ln -s usr/bin "$root/bin"
  ln -s usr/lib "$root/lib"
  ln -s usr/lib64 "$root/lib64"
  ln -s usr/sbin "$root/sbin"
  cp "$here/init" "$root/init" && chmod +x "$root/init"
  cp "$kdir"/modules/*.ko "$kdir/modules/order" "$root/modules/"
  for f in protocols services nsswitch.conf; do [[ -f /etc/$f ]] && cp "/etc/$f" "$root/etc/"; done
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
  printf 'root:x:0:\n' >"$root/etc/group"
  printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
  (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$initrd.tmp"
  mv "$initrd.tmp" "$initrd"
  rm -rf "$root"
fi

accel=(-accel tcg,thread=multi -cpu max)
if [[ -w /dev/kvm ]]; then accel=(-enable-kvm -cpu host); fi
exec timeout --foreground -k 10 "$timeout_s" qemu-system-x86_64 "${accel[@]}" \
  -nographic -no-reboot -m "${KPROXY_QEMU_MEM:-1024}" -smp "${KPROXY_QEMU_CPUS:-2}" \
  -kernel "$kdir/vmlinuz" -initrd "$initrd" \
  -append "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init" \
  -nic none \
  -virtfs local,path=/usr,mount_tag=hostusr,security_model=none,readonly=on \
  -virtfs local,path=/etc,mount_tag=hostetc,security_model=none,readonly=on \
  -virtfs "local,path=$share,mount_tag=share,security_model=none"
