# Cairn: one image for the web process and every worker pool (deploy/docker/entrypoint.sh picks the role).
#   docker build -t cairn .                                   CPU torch (the default)
#   docker build -t cairn:gpu --build-arg VARIANT=gpu .       CUDA torch and faiss on GPUs
#   docker build -t cairn:vllm --build-arg VARIANT=gpu --build-arg WITH_VLLM=1 .
# The final stage has no compilers and runs as an unprivileged user; see docs/deploy.md.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG VARIANT=cpu
ARG WITH_VLLM=0
ARG TORCH_SPEC=torch==2.13.0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/cairn/venv
COPY requirements.lock pyproject.toml ./
COPY deploy/docker/install.sh deploy/docker/install.sh
RUN VARIANT="$VARIANT" WITH_VLLM="$WITH_VLLM" TORCH_SPEC="$TORCH_SPEC" deploy/docker/install.sh /opt/cairn/venv

FROM ${PYTHON_IMAGE} AS runtime
ARG VARIANT=cpu
LABEL org.opencontainers.image.title="Cairn" \
      org.opencontainers.image.description="Self-hosted knowledge base (variant: ${VARIANT})" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/cairn/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CAIRN_DATA_DIR=/srv/cairn \
    CAIRN_LOG_FORMAT=json \
    HF_HUB_OFFLINE=1
RUN groupadd --system --gid 10001 cairn \
    && useradd --system --uid 10001 --gid cairn --home-dir /srv/cairn --no-create-home --shell /usr/sbin/nologin cairn \
    && mkdir -p /srv/cairn /opt/cairn/app \
    && chown cairn:cairn /srv/cairn
COPY --from=build /opt/cairn/venv /opt/cairn/venv
WORKDIR /opt/cairn/app
COPY manage.py pyproject.toml ./
COPY config config
COPY access access
COPY kb kb
COPY ingestion ingestion
COPY inference inference
COPY templates templates
COPY static static
COPY deploy/docker/entrypoint.sh /usr/local/bin/cairn-entrypoint
USER 10001:10001
VOLUME ["/srv/cairn"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["/usr/local/bin/cairn-entrypoint"]
CMD ["web"]
