# unbd/unbd-server: the block server. Build from the repository root:
#   docker build -f deploy/docker/unbd-server.Dockerfile -t unbd/unbd-server:0.1.0 .
# Debian 12, multi-stage: the build stage compiles from this tree with Debian's packages (as
# scripts/install-deps does); the runtime stage gets the binary and exactly the shared-library
# packages it loads (deploy/docker/runtime-packages).
FROM debian:12 AS build
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends \
        build-essential cmake ninja-build pkg-config ca-certificates \
        liburing-dev libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
        librocksdb-dev libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev \
        libgtest-dev libgmock-dev libnbd-dev libssl-dev libisal-dev \
    && rm -rf /var/lib/apt/lists/*
COPY . /src
RUN cmake -S /src -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release \
    && cmake --build /build --target unbd-server \
    && install -D -m 0755 /build/backend/unbd-server /out/usr/local/sbin/unbd-server \
    && /src/deploy/docker/runtime-packages /out/usr/local/sbin/unbd-server > /out/runtime-packages

FROM debian:12
ENV DEBIAN_FRONTEND=noninteractive
COPY --from=build /out/runtime-packages /tmp/runtime-packages
RUN apt-get update && apt-get install -y --no-install-recommends $(cat /tmp/runtime-packages) \
    && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages
COPY --from=build /out/usr/local/sbin/unbd-server /usr/local/sbin/unbd-server
# An unprivileged user (the StatefulSet runs as 65532) owning the store.
RUN groupadd -g 65532 unbd && useradd -u 65532 -g unbd -d /var/lib/unbd -s /usr/sbin/nologin unbd \
    && install -d -o unbd -g unbd -m 0700 /var/lib/unbd
USER 65532:65532
VOLUME /var/lib/unbd
EXPOSE 7420 9420
ENTRYPOINT ["/usr/local/sbin/unbd-server"]
CMD ["--listen", "0.0.0.0:7420", "--data-dir", "/var/lib/unbd", "--metrics-listen", "0.0.0.0:9420"]
