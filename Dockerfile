# Multi-stage build of the ShopLens binaries: `shoplens` (all services, the composer, the
# embedded deployment and operator commands), `shoplens-ingest` (the ingest worker) and
# `shoplens-analytics` (the analytics server).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p shoplens -p shoplens-ingest -p shoplens-analytics \
    && cp target/release/shoplens target/release/shoplens-ingest \
          target/release/shoplens-analytics /usr/local/bin/

# curl: docker-compose.yml's health checks (`curl -sf http://127.0.0.1:PORT/health`).
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/shoplens /usr/local/bin/shoplens-ingest \
     /usr/local/bin/shoplens-analytics /usr/local/bin/
ENV SHOPLENS_DATA_DIR=/data
VOLUME /data
ENTRYPOINT ["shoplens"]
CMD ["run"]
