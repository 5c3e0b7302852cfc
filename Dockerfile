# syntax=docker/dockerfile:1
# Build: dependencies first (cached layer), then the project.
FROM rust:1-bookworm AS builder
RUN apt-get update && apt-get install -y --no-install-recommends libpq-dev pkg-config && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates/fhirbolt-shim/Cargo.toml crates/fhirbolt-shim/Cargo.toml
COPY crates/fhir-structure/Cargo.toml crates/fhir-structure/Cargo.toml
COPY crates/fhirpath/Cargo.toml crates/fhirpath/Cargo.toml
RUN for c in fhirbolt-shim fhir-structure fhirpath; do mkdir -p crates/$c/src && echo '' > crates/$c/src/lib.rs; done \
 && mkdir -p src benches tests/api && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
 && echo 'fn main() {}' > benches/core.rs && echo '' > tests/api/main.rs \
 && cargo fetch --locked
COPY . .
RUN cargo build --release --locked --bin fhirbridge

# Runtime: slim Debian with libpq and CA certificates; data in /data.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libpq5 ca-certificates && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /data fhirbridge && mkdir -p /data && chown fhirbridge /data
COPY --from=builder /src/target/release/fhirbridge /usr/local/bin/fhirbridge
USER fhirbridge
WORKDIR /data
ENV FHIRBRIDGE_LISTEN=0.0.0.0:8080 \
    FHIRBRIDGE_DATABASE_URL=sqlite:///data/fhirbridge.db \
    RUST_LOG=info
EXPOSE 8080
HEALTHCHECK CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /health/ready HTTP/1.0\r\n\r\n' >&3 && grep -q ' 200 ' <&3"]
ENTRYPOINT ["fhirbridge"]
CMD ["serve"]
