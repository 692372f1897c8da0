#!/usr/bin/env bash
# Runs the EdgeFleet demo from a fresh checkout: creates .venv if needed, then `edgefleet demo`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$EDGEFLEET_ROOT"

ensure_venv .venv "agent,server,compress,dev"
exec .venv/bin/edgefleet demo "$@"
