# syntax=docker/dockerfile:1
# produto-server: built with the Rust image, run on distroless (glibc and libgcc only, no
# shell) as the non-root user 65532. build.rs uses a vendored protoc: nothing to install.
#   docker build --build-arg PRODUTO_GIT_COMMIT=$(git rev-parse --short=12 HEAD) -t produto-server .

FROM rust:1.94-slim-bookworm AS build
WORKDIR /src
COPY . .
# The context has no .git: the commit for the build-info metric comes from here.
ARG PRODUTO_GIT_COMMIT=unknown
ENV PRODUTO_GIT_COMMIT=${PRODUTO_GIT_COMMIT}
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin produto-server \
    && cp target/release/produto-server /produto-server

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /produto-server /usr/local/bin/produto-server
USER 65532:65532
# gRPC, and the admin HTTP port (/metrics, /health, /livez, /readyz).
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/produto-server"]
