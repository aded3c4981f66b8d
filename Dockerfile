# script-manager: build with the Rust toolchain, run on a small Debian image
# as an unprivileged user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY docs/runbooks.md ./docs/runbooks.md
RUN cargo build --release --locked --bin script-manager

FROM debian:12.8-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/script-manager --create-home script-manager
COPY --from=build /src/target/release/script-manager /usr/local/bin/script-manager
COPY config/script-manager.toml /etc/script-manager/script-manager.toml
USER script-manager
WORKDIR /var/lib/script-manager
ENV SCRIPT_MANAGER_CONFIG=/etc/script-manager/script-manager.toml \
    SCRIPT_MANAGER_HTTP__LISTEN=0.0.0.0:9797 \
    SCRIPT_MANAGER_STORE__URL=sqlite:///var/lib/script-manager/data/script-manager.db
EXPOSE 9797
ENTRYPOINT ["/usr/local/bin/script-manager"]
