# ltfs container image (docs/containers.md).
#
#   docker build -t ltfs .                  the runtime image (default target)
#   docker build --target s3 -t ltfs-s3 .   a throwaway S3 server for
#                                           deploy/docker-compose.yml
#
# Stages: "build" compiles build/ltfs with the -dev packages of .ci/deps;
# "s3" is Ceph's RADOS Gateway from Debian 12, started by the same script the
# tests use; "runtime" holds ltfs, the libraries it links, fuse3 and sqlite3.
#
# ltfs itself runs as root in its container: mounting takes CAP_SYS_ADMIN and
# /dev/fuse (docker run --device /dev/fuse --cap-add SYS_ADMIN
# --security-opt apparmor=unconfined). The image also has a non-root user,
# "app" (uid 10001), for the application: with allow-other (--allow-other)
# it reads and writes the databases through the mount as that user.
#
# Not built on ltfs's CI machine (no container engine runs there); what is
# checked there: tests/cluster/containers.sh, case deploy_files.

FROM debian:12 AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
	build-essential pkg-config \
	libfuse3-dev libsqlite3-dev libcurl4-openssl-dev libjansson-dev \
	liblz4-dev libmicrohttpd-dev libyaml-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# -o deps: the packages above are all the build needs; .ci/deps would add
# the test tools (clang, Ceph) to this stage.
RUN make -o deps -j"$(nproc)" build/ltfs \
 && install -m 0755 build/ltfs /usr/local/bin/ltfs \
 && /usr/local/bin/ltfs version

FROM debian:12 AS s3
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
	ceph-mon ceph-osd radosgw curl iproute2 procps util-linux \
 && rm -rf /var/lib/apt/lists/*
COPY tests/tools/s3-server /usr/local/bin/s3-server
# S3 on all addresses of the container; objects live in RAM and are gone
# when the container stops. Key ltfstestaccesskey, secret
# ltfstestsecretkey, bucket ltfs-test.
ENV LTFS_S3_LISTEN=0.0.0.0
EXPOSE 9000
STOPSIGNAL SIGTERM
CMD ["/bin/sh", "-c", "s3-server start /var/lib/s3 9000 || exit 1; trap 's3-server stop /var/lib/s3; exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"]

FROM debian:12 AS runtime
# libfuse3-3 .. libyaml-0-2: what build/ltfs links; fuse3: fusermount3 and
# /etc/fuse.conf; sqlite3 and curl: for the app and for health checks.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
	libfuse3-3 libsqlite3-0 libcurl4 libjansson4 liblz4-1 \
	libmicrohttpd12 libyaml-0-2 ca-certificates \
	fuse3 sqlite3 curl \
 && rm -rf /var/lib/apt/lists/* \
 && echo user_allow_other >>/etc/fuse.conf \
 && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin app \
 && mkdir -p /data /var/lib/ltfs /etc/ltfs
COPY --from=build /usr/local/bin/ltfs /usr/local/bin/ltfs
COPY docs/ltfs.example.yml /etc/ltfs/ltfs.example.yml
# 20202: the HTTP server (replication, /healthz, /metrics)
EXPOSE 20202
VOLUME ["/var/lib/ltfs"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["ltfs"]
CMD ["mount", "--data", "/var/lib/ltfs", "/data"]
