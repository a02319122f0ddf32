# syntax=docker/dockerfile:1
# produto-server and produto-bot: built with the Rust image, run on distroless (glibc and
# libgcc only, no shell) as the non-root user 65532. The proto is compiled with a vendored
# protoc (crates/produto-client/build.rs): nothing to install. The last stage is the server;
# the bot (its own crate, crates/produto-bot: no server code) is the `bot` stage:
#   docker build --build-arg PRODUTO_GIT_COMMIT=$(git rev-parse --short=12 HEAD) -t produto-server .
#   docker build --target bot -t produto-bot .

FROM rust:1.94-slim-bookworm AS build
WORKDIR /src
COPY . .
# The context has no .git: the commit for the build-info metric comes from here.
ARG PRODUTO_GIT_COMMIT=unknown
ENV PRODUTO_GIT_COMMIT=${PRODUTO_GIT_COMMIT}
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p produto -p produto-bot --bin produto-server --bin produto-bot \
    && cp target/release/produto-server target/release/produto-bot /

# The chat bot: Telegram (token from PRODUTO_BOT_TELEGRAM_TOKEN or _FILE), admin port 9091.
FROM gcr.io/distroless/cc-debian12:nonroot AS bot
COPY --from=build /produto-bot /usr/local/bin/produto-bot
USER 65532:65532
# The admin HTTP port (/health, /livez, /readyz, /metrics), and the webhook's (webhook mode).
EXPOSE 9091 8443
ENTRYPOINT ["/usr/local/bin/produto-bot"]

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /produto-server /usr/local/bin/produto-server
USER 65532:65532
# gRPC, and the admin HTTP port (/metrics, /health, /livez, /readyz).
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/produto-server"]
