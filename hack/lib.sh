# Shared by the hack/ scripts: installs what kproxy's build and tests need on a fresh
# Debian machine (as root). Source it; it defines functions and changes nothing by itself.

# go_version is the toolchain go.mod asks for.
KPROXY_GO_VERSION=1.26.8

# ensure_packages installs the Debian packages the data plane and the tests use.
ensure_packages() {
  local missing=()
  command -v iptables >/dev/null || missing+=(iptables)
  command -v nft >/dev/null || missing+=(nftables)
  command -v conntrack >/dev/null || missing+=(conntrack)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v sysctl >/dev/null || missing+=(procps)
  command -v git >/dev/null || missing+=(git)
  command -v curl >/dev/null || missing+=(ca-certificates)
  if ((${#missing[@]})); then
    echo "installing Debian packages: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
  fi
}

# ensure_go puts a Go toolchain new enough for go.mod on PATH. Debian's golang-go is
# too old, so it bootstraps from it: the old go downloads the right toolchain from the
# Go module proxy (the module golang.org/toolchain), which every Go installation can.
ensure_go() {
  local have=""
  if command -v go >/dev/null; then
    have=$(go env GOVERSION 2>/dev/null | sed 's/^go//')
  elif [[ -x /usr/local/go/bin/go ]]; then
    export PATH=/usr/local/go/bin:$PATH
    have=$(go env GOVERSION | sed 's/^go//')
  fi
  if [[ -n "$have" ]] && printf '%s\n%s\n' "1.26" "$have" | sort -V -C; then
    return 0
  fi
  if ! command -v go >/dev/null; then
    echo "installing Debian's golang-go to bootstrap Go $KPROXY_GO_VERSION" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go ca-certificates >&2
  fi
  local mod="golang.org/toolchain@v0.0.1-go${KPROXY_GO_VERSION}.linux-$(dpkg --print-architecture)"
  local dir src
  dir=/usr/local/lib/kproxy-go/go$KPROXY_GO_VERSION
  if [[ ! -x "$dir/bin/go" ]]; then
    src=$(cd /tmp && GOFLAGS=-mod=mod GO111MODULE=on go mod download -json "$mod" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
    [[ -f "$src/bin/go" ]] || { echo "could not fetch Go $KPROXY_GO_VERSION ($mod)" >&2; return 1; }
    # Module zips carry no file modes: copy it out of the read-only module cache and
    # make the tools executable, as Go's own toolchain switch does.
    mkdir -p "$(dirname "$dir")" && rm -rf "$dir.tmp" && cp -r "$src" "$dir.tmp"
    chmod -R u+w "$dir.tmp" && chmod +x "$dir.tmp"/bin/* "$dir.tmp"/pkg/tool/*/*
    mv "$dir.tmp" "$dir"
  fi
  export PATH="$dir/bin:$PATH"
  export GOTOOLCHAIN=local
}

require_root() {
  if [[ $(id -u) -ne 0 ]]; then
    echo "$0 needs root: it creates network namespaces and programs netfilter in them" >&2
    exit 1
  fi
}
