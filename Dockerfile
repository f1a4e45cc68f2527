# Sluice container image: a static binary on a distroless base, run as
# non-root, with the write-ahead log on a volume.
#
#   docker build -t sluice .
#   docker run -p 9091:9091 -v sluice-wal:/data sluice
#
# cmd/proxy/ops_test.go runs the `go build` line below and then the binary
# with exactly the ENTRYPOINT and CMD flags (on a loopback port, with a
# temporary directory for /data), so a renamed flag fails CI.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/sluice ./cmd/proxy \
 && mkdir -p /out/data/wal

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sluice /usr/local/bin/sluice
# /data holds the WAL, its checkpoints and the per-target forward backlog
# (<wal.dir>/queues). It must be writable by the nonroot user (65532); a
# named volume mounted there starts as a copy of this directory, so it
# inherits the ownership.
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
WORKDIR /data
VOLUME ["/data"]
# The Pushgateway port, so push clients work unchanged.
EXPOSE 9091
# No HEALTHCHECK: distroless has no shell, curl or wget to run one, and
# Sluice has no self-probe subcommand. Orchestrators probe over HTTP
# instead: liveness GET /-/healthy, readiness GET /-/ready (503 while the
# WAL replays). See deploy/.
ENTRYPOINT ["/usr/local/bin/sluice"]
# Flags (not the config file) say how to run the process; add
# --config.file=/etc/sluice/sluice.yml with a mounted file to forward.
CMD ["--web.listen-address=:9091", "--wal.dir=/data/wal"]
