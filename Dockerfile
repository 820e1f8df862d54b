# The kproxy image for deploy/daemonset.yaml:
#   docker build -t ghcr.io/kproxy/kproxy:dev .
# The kubelet cluster of hack/cluster.sh builds the same image without a Docker engine
# (test/kubecluster/images.go): the same Debian release and the same package list,
# hack/image-packages.txt; a unit test keeps the two from drifting apart.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/kproxy ./cmd/kproxy

FROM debian:bookworm-slim
COPY hack/image-packages.txt /tmp/image-packages.txt
RUN apt-get update \
 && grep -v '^#' /tmp/image-packages.txt | xargs apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/image-packages.txt
COPY --from=build /out/kproxy /usr/local/bin/kproxy
ENTRYPOINT ["/usr/local/bin/kproxy"]
