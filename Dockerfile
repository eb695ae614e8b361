# syntax=docker/dockerfile:1
# llmquota: one image for both processes, `llmquota operator` and `llmquota sidecar`.
#
#   docker build -t llmquota:dev .
#   docker run --rm llmquota:dev sidecar --help
#
# Two stages: the builder installs the package into a virtualenv; the final stage
# copies only that virtualenv onto a clean slim image, so no pip cache, build backend
# or source tree ships. Every dependency has a binary wheel, so neither stage needs a
# compiler.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, from the metadata alone, so that a source change does not
# reinstall them.
COPY pyproject.toml README.md ./
RUN python - <<'PY'
import subprocess, sys, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
subprocess.run([sys.executable, "-m", "pip", "install", "--only-binary=:all:", *deps], check=True)
PY
COPY core ./core
COPY operator ./operator
COPY sidecar ./sidecar
RUN pip install --no-deps . \
    && python -m compileall -q /opt/venv \
    && llmquota --help >/dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="llmquota" \
      org.opencontainers.image.description="Kubernetes-native spend budgets and rate limits for LLM APIs" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /opt/venv /opt/venv
# A name for the uid below: without one getpass.getuser() raises, and kopf asks it for
# the operator's peering identity (found when the chart first ran on a real node).
RUN echo 'nonroot:x:65532:65532:nonroot:/tmp:/usr/sbin/nologin' >> /etc/passwd \
    && echo 'nonroot:x:65532:' >> /etc/group
# Read-only root file system friendly: no .pyc writes at run time (compiled above),
# unbuffered logs, and HOME in /tmp (the chart mounts an emptyDir there).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# 65532 is the conventional "nonroot" uid/gid; numeric so that runAsNonRoot can
# verify it without an /etc/passwd entry.
USER 65532:65532
# 4000: sidecar proxy; 8080: operator health and metrics; 9443: operator webhook.
EXPOSE 4000 8080 9443
ENTRYPOINT ["llmquota"]
CMD ["--help"]
