# Images of the three binaries: mtls-gateway, dev-idsvr and example-api.
#
#   docker build .                          builds the binaries in rust:1-bookworm (target `runtime`, the default)
#   docker build --target prebuilt CONTEXT  copies binaries built on the host from CONTEXT/bin/
#                                           (scripts/compose-ci.sh stages them; no Rust toolchain in a container)
#
# The base images are build arguments, for registries other than Docker Hub or a locally imported
# Debian (scripts/compose-ci.sh uses localhost/debian:bookworm made with debootstrap).
ARG BUILD_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILD_IMAGE} AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake perl make && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY examples ./examples
COPY devstack ./devstack
COPY dpop-client ./dpop-client
RUN cargo build --release --locked --workspace --bins

# What every image has: CA certificates and the non-root user the binaries run as. Nothing else
# (healthchecks use `mtls-gateway health` and openssl s_client, which ca-certificates brings).
FROM ${RUNTIME_IMAGE} AS base
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --home-dir /nonexistent gateway
WORKDIR /app

# The shared-state server of compose.yaml's two gateway replicas: Debian's redis-server, so that the
# stack needs no other registry than the one the runtime image comes from.
FROM ${RUNTIME_IMAGE} AS redis
RUN apt-get update && apt-get install -y --no-install-recommends redis-server && rm -rf /var/lib/apt/lists/*
USER redis
EXPOSE 6379
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no", "--maxmemory", "200mb", "--maxmemory-policy", "noeviction"]

FROM base AS prebuilt
COPY bin/mtls-gateway bin/dev-idsvr bin/example-api /usr/local/bin/
USER 10001

# Binding 443 as a non-root user: compose.yaml sets net.ipv4.ip_unprivileged_port_start=0 in the
# container's network namespace (Docker's own default since 20.10); Kubernetes listens on 8443.
FROM base AS runtime
COPY --from=build /src/target/release/mtls-gateway /src/target/release/dev-idsvr /src/target/release/example-api /usr/local/bin/
USER 10001
