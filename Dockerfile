# syntax=docker/dockerfile:1
# Stage 1: build. Dependencies are fetched in their own cached layer.
FROM rust:1-bookworm AS builder
RUN apt-get update && apt-get install -y --no-install-recommends libpq-dev pkg-config npm && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates/fhirbolt-shim/Cargo.toml crates/fhirbolt-shim/Cargo.toml
COPY crates/fhir-structure/Cargo.toml crates/fhir-structure/Cargo.toml
COPY crates/fhirpath/Cargo.toml crates/fhirpath/Cargo.toml
COPY crates/fhir-validation/Cargo.toml crates/fhir-validation/Cargo.toml
RUN for c in fhirbolt-shim fhir-structure fhirpath fhir-validation; do mkdir -p crates/$c/src && echo '' > crates/$c/src/lib.rs; done \
 && mkdir -p src benches tests/api && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
 && echo 'fn main() {}' > benches/core.rs && echo '' > tests/api/main.rs \
 && cargo fetch --locked
COPY . .
RUN cargo build --release --locked --bin fhirbridge
# The FHIR R4 core definitions, so the image validates offline from the first start.
RUN mkdir -p "/fhir-packages/hl7.fhir.r4.examples#4.0.1" && cd "/fhir-packages/hl7.fhir.r4.examples#4.0.1" \
 && npm pack hl7.fhir.r4.examples@4.0.1 && tar xzf hl7.fhir.r4.examples-4.0.1.tgz && rm ./*.tgz

# Stage 2: runtime. Slim Debian with libpq and CA certificates; data in /data.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libpq5 ca-certificates && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /data fhirbridge && mkdir -p /data && chown fhirbridge /data
COPY --from=builder /src/target/release/fhirbridge /usr/local/bin/fhirbridge
COPY --from=builder --chown=fhirbridge /fhir-packages /usr/share/fhirbridge/packages
COPY --from=builder /src/profiles /usr/share/fhirbridge/profiles
USER fhirbridge
WORKDIR /data
ENV FHIRBRIDGE_LISTEN=0.0.0.0:8080 \
    FHIRBRIDGE_DATABASE_URL=sqlite:///data/fhirbridge.db \
    FHIR_PACKAGE_CACHE=/usr/share/fhirbridge/packages \
    FHIRBRIDGE_PROFILES_DIR=/usr/share/fhirbridge/profiles/ukcore \
    RUST_LOG=info
EXPOSE 8080
HEALTHCHECK CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /health/ready HTTP/1.0\r\n\r\n' >&3 && grep -q ' 200 ' <&3"]
ENTRYPOINT ["fhirbridge"]
CMD ["serve"]
