# Multi-stage build of the three binaries: mtls-gateway, dev-idsvr and example-api.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake perl make && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY examples ./examples
COPY devstack ./devstack
RUN cargo build --release --locked --workspace --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 gateway
COPY --from=build /src/target/release/mtls-gateway /src/target/release/dev-idsvr /src/target/release/example-api /usr/local/bin/
WORKDIR /app
USER gateway
# Binding 443 as a non-root user needs this capability in compose (cap_add: NET_BIND_SERVICE) or a
# sysctl; compose.yaml grants it to the gateway only.
