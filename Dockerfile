# syntax=docker/dockerfile:1
# The image of every baedal service in temporal-compose.yml: baedal-api (the
# default command), baedal-worker and baedal-paysim.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# No system protoc needed: temporalio-protos builds with vendored-protox.
# target/ is a cache mount, so the binaries are copied out of it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p baedal-api -p baedal-worker -p baedal-paysim \
 && mkdir -p /out \
 && cp target/release/baedal-api target/release/baedal-worker target/release/baedal-paysim /out/

FROM debian:bookworm-slim
# ca-certificates: TLS to a real payment gateway or webhook; curl: the healthchecks.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
# The key files are made 0600 by this user in /var/lib/baedal/keys; a named
# volume mounted there starts with this ownership.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/baedal --shell /usr/sbin/nologin baedal \
 && mkdir -p /var/lib/baedal/keys /var/lib/baedal/data \
 && chown -R baedal:baedal /var/lib/baedal \
 && chmod 700 /var/lib/baedal/keys
COPY --from=builder /out/ /usr/local/bin/
USER baedal
WORKDIR /var/lib/baedal
EXPOSE 8080
CMD ["baedal-api"]
