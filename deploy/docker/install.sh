#!/bin/sh
# Install Cairn's Python dependencies into the virtualenv at $1 (the image's build stage runs this;
# tests/deploy/test_images.py runs it too, in a clean virtualenv, so the recipe is exercised without Docker).
#   VARIANT=cpu  the CPU build of torch (the default image)
#   VARIANT=gpu  a CUDA build of torch and faiss on GPUs; WITH_VLLM=1 adds vLLM
# TORCH_SPEC and TORCH_INDEX choose the torch build (the Makefile's TORCH, same version).
set -eu
venv="$1"
variant="${VARIANT:-cpu}"
torch_spec="${TORCH_SPEC:-torch==2.13.0}"
here="$(cd "$(dirname "$0")/../.." && pwd)"
pip="$venv/bin/python -m pip"

case "$variant" in
  cpu) torch_index="${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}" ;;
  gpu) torch_index="${TORCH_INDEX:-https://download.pytorch.org/whl/cu128}" ;;
  *) echo "VARIANT must be cpu or gpu, got '$variant'" >&2; exit 2 ;;
esac

# torch first, from its own index; -c keeps its dependencies at the locked versions.
$pip install --no-cache-dir --extra-index-url "$torch_index" "$torch_spec" -c "$here/requirements.lock"
$pip install --no-cache-dir -r "$here/requirements.lock"
if [ "$variant" = gpu ]; then
  # faiss on the GPU instead of the CPU build; vLLM only when asked for (large, CUDA only).
  $pip uninstall -y faiss-cpu
  $pip install --no-cache-dir "faiss-gpu-cu12>=1.8,<1.16"
  if [ "${WITH_VLLM:-0}" = 1 ]; then
    $pip install --no-cache-dir "vllm>=0.6"
  fi
fi
# What Cairn imports is installed: a broken requirement fails the build here, not at start-up.
$venv/bin/python -c "import django, rest_framework, celery, faiss, torch, sentence_transformers, prometheus_client"
