#!/usr/bin/env bash
# Wheels to carry to a GPU machine whose image has PyTorch and transformers but not nnsight (and
# no registry access): nnsight and the dependencies such an image may lack, pinned to the versions
# this project's CPU environment runs. nnsight, greenlet, pydantic-core and zstandard are binary
# wheels: pass the GPU image's Python version (python -c 'import sys; print(sys.version[:4])').
#
#   benchmarks/gpu_wheels.sh 3.11            # -> benchmarks/wheels/*.whl
#
# bench_extraction.py --gpu-shape unpacks them and appends them to sys.path where nnsight is
# missing (packages the image already has keep precedence).
set -euo pipefail
PY=${1:-3.11}
OUT=${2:-$(dirname "$0")/wheels}
PIP=${PIP:-python -m pip}
$PIP download --no-deps --only-binary=:all: --python-version "$PY" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux1_x86_64 --platform any -d "$OUT" \
  nnsight==0.8.1 greenlet==3.5.6 cloudpickle==3.1.3 pydantic==2.14.4 pydantic-core==2.50.5 \
  annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0 zstandard==0.25.0 \
  websocket-client==1.9.2 httpx==0.28.1 httpcore==1.0.9 h11==0.16.0 anyio==4.16.0 idna==3.20 certifi
ls -la "$OUT"
