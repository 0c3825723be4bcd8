# syntax=docker/dockerfile:1
#
# One image for every sipmesh target: `sipmesh serve --target <service>` (or the
# SIPMESH_TARGET environment variable) picks what a container runs. See
# docs/deployment.md.
#
# Stage 1 builds wheels for sipmesh and all of its dependencies with the compilers
# some of them may need; stage 2 installs those wheels into a clean slim image
# with no compiler, no pip cache and no source tree, running as a non-root user.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what the wheel is built from (.dockerignore keeps tests, .venv, .git out).
# sipmesh/<service> are symlinks into services/ (docs/development.md); setuptools
# follows them, so the wheel holds sipmesh.edge, sipmesh.router, ... as packages.
COPY pyproject.toml README.md ./
COPY services/ services/
COPY sipmesh/ sipmesh/
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="sipmesh" \
      org.opencontainers.image.description="SIP server platform in the tradition of Kamailio, as Python services" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    # Container defaults: listen on every interface of the pod/container; the probe
    # and gRPC ports are the ones the compose file and the Kubernetes manifests use.
    SIPMESH_HTTP=0.0.0.0:9090 \
    SIPMESH_GRPC=0.0.0.0:50051 \
    SIPMESH_ADMIN=0.0.0.0:8080
# Wheels only, from the builder, never from an index: the final stage needs no
# compiler and gets exactly what was built and tested in stage 1.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels sipmesh \
    && groupadd --system --gid 10001 sipmesh \
    && useradd --system --uid 10001 --gid sipmesh --home-dir /var/lib/sipmesh \
       --shell /usr/sbin/nologin sipmesh \
    && install -d -o sipmesh -g sipmesh -m 0750 /var/lib/sipmesh
# The embedded SQLite default (sipmesh.sqlite) lands in the working directory.
WORKDIR /var/lib/sipmesh
USER 10001:10001
# SIP (udp/tcp 5060, tls 5061), probes/metrics, inter-service gRPC, admin API.
EXPOSE 5060/udp 5060/tcp 5061/tcp 9090/tcp 50051/tcp 8080/tcp
# /ready on the http port: 200 once every service of this process runs and its
# backends answer (503 otherwise). The port follows SIPMESH_HTTP so a container
# started with another --http port via the environment is still checked right.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os,sys,urllib.request as u; h=os.environ.get('SIPMESH_HTTP','127.0.0.1:9090'); p=h.rsplit(':',1)[1]; sys.exit(0 if u.urlopen(f'http://127.0.0.1:{p}/ready',timeout=2).status==200 else 1)"]
# SIGTERM drains for SIPMESH_GRACE_PERIOD seconds (sipmesh serve handles it).
STOPSIGNAL SIGTERM
ENTRYPOINT ["sipmesh"]
CMD ["serve"]
