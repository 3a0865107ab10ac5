# syntax=docker/dockerfile:1
#
# faulttrace: one image that runs `faulttrace serve`.
#
#   docker build -t faulttrace .
#   docker run --rm -p 4317:4317 -p 4318:4318 -p 8888:8888 \
#       -e OTLP_ENDPOINT=my-backend:4317 faulttrace
#
# The default config (/etc/faulttrace/config.yaml, from
# examples/docker/config.yaml) receives OTLP on 0.0.0.0:4317 (gRPC) and
# 0.0.0.0:4318 (HTTP), serves /metrics and /healthz on 0.0.0.0:8888, and
# exports to ${OTLP_ENDPOINT} (default jaeger:4317) over plaintext OTLP/gRPC.
# Dependencies are installed at the versions constraints.txt pins.
# Mount your own file over it to change anything:
#   -v $PWD/config.yaml:/etc/faulttrace/config.yaml:ro
#
# Spans are journaled before they are acknowledged, by default in
# $XDG_STATE_HOME/faulttrace/journal.duckdb: /var/lib/faulttrace/state/faulttrace/
# here.  That directory is a VOLUME, outside the container's own layer: name it
# so that what was buffered or not yet delivered survives the container being
# replaced (a new image, `docker run` again; an anonymous volume goes with
# `--rm`).  One container per volume: a journal belongs to one process.
#   -v faulttrace-state:/var/lib/faulttrace/state

ARG PYTHON_VERSION=3.11

# --- builder: wheels for faulttrace and every dependency ---------------------
FROM python:${PYTHON_VERSION}-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# .dockerignore keeps the context to what the wheel needs.
COPY . .
# Every dependency at the version constraints.txt pins (one tested resolve),
# not whatever is newest on the day of the build.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --wheel-dir /wheels --constraint constraints.txt .

# --- runtime -----------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim

# MALLOC_ARENA_MAX: fewer glibc malloc arenas, less RSS fragmentation across
# the gRPC and DuckDB threads.  XDG_STATE_HOME: where the journal is, whatever
# user the container runs as (without it, ~ decides: / for a uid with no home).
ENV PYTHONDONTWRITEBYTECODE=1 \
    XDG_STATE_HOME=/var/lib/faulttrace/state \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1 \
    MALLOC_ARENA_MAX=2

# Install from the builder's wheels only (no index), without keeping them in a
# layer (RUN --mount needs BuildKit, Docker's default builder since 23.0).
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels faulttrace \
    && faulttrace --help >/dev/null

# Unprivileged user; its home is the working directory (DuckDB's spill files).
# The state directory holds the journal (processors.faulttrace.storage.path's
# default); made here, owned by the user, so that a volume mounted on it starts
# with that owner.
RUN groupadd --gid 10001 faulttrace \
    && useradd --uid 10001 --gid faulttrace --no-log-init \
       --home-dir /var/lib/faulttrace --create-home --shell /usr/sbin/nologin faulttrace \
    && install -d -o faulttrace -g faulttrace -m 0700 /var/lib/faulttrace/state

COPY examples/docker/config.yaml /etc/faulttrace/config.yaml
COPY examples/docker/healthcheck.py /usr/local/lib/faulttrace/healthcheck.py

USER 10001:10001
WORKDIR /var/lib/faulttrace
# The journal: buffered and undelivered spans outlive the container.
VOLUME ["/var/lib/faulttrace/state"]

# 4317 OTLP/gRPC, 4318 OTLP/HTTP, 8888 /metrics and /healthz
EXPOSE 4317 4318 8888

# Probes the address the running configuration names, whatever file, --set or
# port flags it came from (healthcheck.py reads serve's command line, PID 1, and
# loads that configuration): each health_check extension in service.extensions
# (200 once the pipeline has started, 503 from the moment it stops), else
# /healthz on the metrics endpoint.  No proxy, whatever http_proxy says.  Loading
# the configuration imports faulttrace (about 1.5 s of CPU), hence the timeout.
HEALTHCHECK --interval=15s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/lib/faulttrace/healthcheck.py", "--timeout", "4"]

ENTRYPOINT ["faulttrace", "serve"]
CMD ["--config", "/etc/faulttrace/config.yaml"]
