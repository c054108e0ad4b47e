#!/usr/bin/env bash
# Every test: unit and whole-process tests (cargo test), then the README's first command end to end
# (scripts/run-local.sh with the debug build, run once).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
scripts/install-deps.sh
cargo test --all-targets 2>&1
PROFILE=debug RUN_ONCE=1 scripts/run-local.sh
echo "run-local: 1 passed, 0 failed"
