#!/usr/bin/env bash
# Virtual environments for the serving benchmark's peers, outside the repository (PyTriton pins numpy 1.26).
set -euo pipefail
python3 -m venv /tmp/venv-triton && /tmp/venv-triton/bin/pip install -q nvidia-pytriton onnxruntime
python3 -m venv /tmp/venv-litserve && /tmp/venv-litserve/bin/pip install -q litserve onnxruntime numpy
python3 -m venv /tmp/venv-bento && /tmp/venv-bento/bin/pip install -q bentoml onnxruntime numpy
python3 -m venv /tmp/venv-fastapi && /tmp/venv-fastapi/bin/pip install -q fastapi "uvicorn[standard]" onnxruntime numpy
command -v wrk >/dev/null && command -v h2load >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk nghttp2-client)
