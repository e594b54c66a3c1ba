# syntax=docker/dockerfile:1
# Payments security sidecar. Build:  docker build -t payments-sidecar .
# Run:  docker run --read-only --tmpfs /tmp -v $PWD/config:/etc/sidecar:ro \
#         -p 8000:8000 payments-sidecar
# See docs/deployment.md.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: the project's wheel and every dependency's wheel ----------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# .dockerignore lets through only pyproject.toml, README/LICENSE and sidecar/.
COPY . .
RUN python -m pip wheel --wheel-dir /wheels .

# ---- final: a venv with only the installed wheels, running as uid 10001 ----------------
FROM ${PYTHON_IMAGE}
ARG UID=10001
ENV PATH=/opt/sidecar/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TMPDIR=/tmp \
    SIDECAR_CONFIG=/etc/sidecar/sidecar.yaml
# Multi-worker metrics: with `--workers N` (N > 1) the supervisor keeps prometheus-client's
# per-process files in a fresh directory under $TMPDIR (or in $PROMETHEUS_MULTIPROC_DIR,
# which it wipes at start). /tmp must therefore be writable: with a read-only root
# filesystem mount an emptyDir (Kubernetes) or a tmpfs (`--tmpfs /tmp`, compose `tmpfs:`)
# there. PROMETHEUS_MULTIPROC_DIR is deliberately not set here: a single worker keeps its
# metrics in memory, and a set-but-missing directory would stop it at start.

RUN groupadd --system --gid ${UID} sidecar \
 && useradd --system --uid ${UID} --gid ${UID} --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin sidecar \
 && mkdir -p /etc/sidecar /var/lib/sidecar/spool /var/lib/sidecar/keys /var/log/sidecar \
 && chown -R ${UID}:${UID} /var/lib/sidecar /var/log/sidecar

RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/sidecar \
 && /opt/sidecar/bin/pip install --no-index --find-links=/wheels payments-sidecar \
 && /opt/sidecar/bin/pip uninstall -y pip \
 && /opt/sidecar/bin/python -m compileall -q /opt/sidecar/lib \
 && /opt/sidecar/bin/sidecar --version
# Byte-compiled at build time: with a read-only root nothing could write .pyc later.

USER ${UID}:${UID}
WORKDIR /var/lib/sidecar
# 8000: the public (proxied) port. 9901: admin (/healthz /readyz /metrics); the config
# must listen on 0.0.0.0:9901 in a container for probes and Prometheus to reach it.
EXPOSE 8000 9901
# slim has no curl: probe /healthz with the standard library.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9901/healthz', timeout=2).status == 200 else 1)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["sidecar"]
CMD ["run", "-c", "/etc/sidecar/sidecar.yaml"]
