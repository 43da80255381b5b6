#!/usr/bin/env bash
# The static checks CI runs before the tests: lint, formatting, import directions and types.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports --no-cache
.venv/bin/mypy
