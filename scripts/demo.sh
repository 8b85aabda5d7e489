#!/usr/bin/env bash
# `make demo`: the stack is up (make up); run the main job end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/infiniteflow demo "$@"
