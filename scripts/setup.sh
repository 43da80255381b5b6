#!/usr/bin/env bash
# Sets up .venv with bulk-rerank and its test tools. Safe to run again: it reinstalls only when
# pyproject.toml changed. torch is installed first, pinned, so that pip takes the local CPU build
# (set TORCH_SPEC to choose another build, e.g. a CUDA one on GPU machines).
set -euo pipefail
cd "$(dirname "$0")/.."

python_bin=${PYTHON:-python3.11}
command -v "$python_bin" >/dev/null 2>&1 || python_bin=python3
if [ ! -x .venv/bin/python ]; then
    "$python_bin" -m venv .venv
fi

# Debian's chromium: the headless browser tests/acceptance/test_flower.py looks at Flower with (never downloaded by
# the tests themselves). Installed when missing and this runs as root with apt-get, as on CI.
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing chromium (headless browser for tests/acceptance/test_flower.py) ..." >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
    else
        echo "setup: chromium is missing and cannot be installed here (needs root and apt-get);" \
            "tests/acceptance/test_flower.py will skip its browser check (on CI it fails instead)" >&2
    fi
fi

stamp=".venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
    .venv/bin/python -m pip install --quiet -e ".[test]"
    rm -f .venv/.installed-*
    touch "$stamp"
fi
