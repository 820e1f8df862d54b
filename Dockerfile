# The kproxy image for deploy/daemonset.yaml:
#   docker build -t ghcr.io/kproxy/kproxy:dev .
# It has never been built in this repository's CI (no container runtime there); the
# binary it packages is the one the tests build and run.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/kproxy ./cmd/kproxy

FROM debian:bookworm-slim
# iptables (with its nft and legacy backends), nftables and conntrack: the tools
# kproxy runs; kmod lets iptables load modules from the host's /lib/modules.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables nftables conntrack kmod ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/kproxy /usr/local/bin/kproxy
ENTRYPOINT ["/usr/local/bin/kproxy"]
