# syntax=docker/dockerfile:1
# fulfilld: one binary on a distroless base, running as non-root.
#   docker build -t fulfilld .
#   docker run -p 4242:4242 -v fulfilld-data:/data --env-file fulfilld.env fulfilld
#   docker run --rm -p 4242:4242 fulfilld demo --listen 0.0.0.0:4242   # no Stripe account
# Backups while it runs:  docker exec <container> fulfilld backup /data/backup-$(date +%F).redb

FROM rust:1-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them (cached layer).
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
    && echo 'fn main() {}' > benches/ingest.rs && echo 'fn main() {}' > benches/dashboard.rs \
    && cargo build --release --locked --bin fulfilld \
    && rm -rf src benches
COPY src ./src
COPY assets ./assets
COPY benches ./benches
COPY config.toml.example ./
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin fulfilld \
    && mkdir -p -m 700 /data

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="fulfilld" \
      org.opencontainers.image.description="Exactly-once fulfillment for Stripe Checkout and Payment Links: webhook endpoint, landing page, dashboard" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /src/target/release/fulfilld /usr/local/bin/fulfilld
# distroless has no shell to mkdir/chown: bring an empty, writable /data along.
COPY --from=build --chown=65532:65532 /data /data
ENV FULFILLD_SERVER__LISTEN=0.0.0.0:4242 \
    FULFILLD_STORAGE__PATH=/data/fulfilld.redb
VOLUME /data
EXPOSE 4242
# Numeric, so Kubernetes' runAsNonRoot can verify it (distroless's nonroot).
USER 65532:65532
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/fulfilld", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/fulfilld"]
CMD ["serve"]
