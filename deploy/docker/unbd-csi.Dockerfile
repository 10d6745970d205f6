# unbd/unbd-csi: the CSI plugin (node and controller) with the unbd command line it drives (one
# frontend daemon per staged volume). Build from the repository root:
#   docker build -f deploy/docker/unbd-csi.Dockerfile -t unbd/unbd-csi:0.1.0 .
# Debian 12, multi-stage, as unbd-server.Dockerfile. The runtime stage adds what staging a volume
# runs: mkfs.ext4/mkfs.xfs, blkid, mount, and modprobe for the node's init container.
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
    && cmake --build /build --target unbd unbd-csi \
    && install -D -m 0755 /build/cli/unbd /out/usr/local/sbin/unbd \
    && install -D -m 0755 /build/csi/unbd-csi /out/usr/local/sbin/unbd-csi \
    && /src/deploy/docker/runtime-packages /out/usr/local/sbin/unbd /out/usr/local/sbin/unbd-csi \
        > /out/runtime-packages

FROM debian:12
ENV DEBIAN_FRONTEND=noninteractive
COPY --from=build /out/runtime-packages /tmp/runtime-packages
RUN apt-get update && apt-get install -y --no-install-recommends $(cat /tmp/runtime-packages) \
        e2fsprogs xfsprogs util-linux mount kmod \
    && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages
COPY --from=build /out/usr/local/sbin/unbd /out/usr/local/sbin/unbd-csi /usr/local/sbin/
ENV CSI_ENDPOINT=unix:///csi/csi.sock
ENTRYPOINT ["/usr/local/sbin/unbd-csi"]
