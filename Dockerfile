# syntax=docker/dockerfile:1
# One image, three static binaries: `manager` (the operator), `sinkworker`
# (run in every sink's pods; the operator's default worker image is this
# image) and `sinkworker-iceberg` (the same worker built with Iceberg
# tables, run by sinks with destination.table). Build with
# `make docker-build IMG=<repo>:<tag>`.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS TARGETARCH
WORKDIR /src
# Dependencies first, so source edits reuse the module cache layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY api/ api/
COPY cmd/ cmd/
COPY controllers/ controllers/
COPY sinkworker/ sinkworker/
# Static binaries (no cgo), reproducible (-trimpath), without debug info.
ENV CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH}
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags="-s -w" -o /out/manager ./cmd/manager && \
    go build -trimpath -ldflags="-s -w" -o /out/sinkworker ./cmd/sinkworker && \
    go build -trimpath -ldflags="-s -w" -tags iceberg -o /out/sinkworker-iceberg ./cmd/sinkworker

# distroless static: no shell, no package manager; runs as nonroot (65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/manager /out/sinkworker /out/sinkworker-iceberg /usr/local/bin/
# Pods run `manager`, `sinkworker` or `sinkworker-iceberg` by name
# (command:), found on this PATH.
ENV PATH=/usr/local/bin:/usr/bin:/bin
USER 65532:65532
ENTRYPOINT ["manager"]
