# Multi-stage build of the `shoplens` binary (all services, composer and operator commands).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p shoplens && cp target/release/shoplens /usr/local/bin/shoplens

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/shoplens /usr/local/bin/shoplens
ENV SHOPLENS_DATA_DIR=/data
VOLUME /data
ENTRYPOINT ["shoplens"]
CMD ["run"]
