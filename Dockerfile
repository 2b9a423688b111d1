# tether: multi-stage build; the runtime image holds the binary, its default
# config and nothing else (no shell, no package manager), and runs as non-root.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config ./config
RUN cargo build --release --locked --bin tether

FROM gcr.io/distroless/cc-debian12:nonroot
WORKDIR /app
COPY --from=build /src/target/release/tether /usr/local/bin/tether
COPY config/default.toml /app/config/default.toml
USER nonroot:nonroot
EXPOSE 8080
ENV TETHER_SERVER__LISTEN=0.0.0.0:8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/tether", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/tether"]
