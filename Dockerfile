# leash's image: built from this repository, a glibc binary on a distroless base with
# no shell, run as a non-root user.
#
#   docker build -t leash:0.1.0 .
#   docker run --rm -p 9191:9191 -p 9192:9192 leash:0.1.0
#
# CI builds the same release binary (`cargo build --release --locked --bin leash`) and
# runs the end-to-end tests on it; it does not build the image (no container runtime).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin leash \
 && strip target/release/leash \
 && mkdir -p /out/var/lib/leash

# glibc and libgcc, nothing else: the binary's only runtime dependencies.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/leash /usr/local/bin/leash
# Where the live context's store goes unless configured (state.path), writable by the
# user leash runs as; mount a volume here to keep it across restarts.
COPY --from=build --chown=65532:65532 /out/var/lib/leash /var/lib/leash
ENV XDG_STATE_HOME=/var/lib/leash
USER 65532:65532
EXPOSE 9191 9192
# /readyz: a policy serves. Kubernetes uses its own probes (deploy/kubernetes).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
  CMD ["/usr/local/bin/leash", "probe", "http://127.0.0.1:9192/readyz"]
ENTRYPOINT ["/usr/local/bin/leash"]
CMD ["serve", "--grpc-addr", "0.0.0.0:9191", "--admin-addr", "0.0.0.0:9192"]
