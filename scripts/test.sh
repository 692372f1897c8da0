#!/usr/bin/env bash
# Runs the whole test suite: system packages, virtual environments, ruff, mypy, pytest, and the agent
# tests again on the legacy TFLite runtime (numpy < 2). Arguments are passed to pytest; with
# arguments (a targeted run) the legacy stage is skipped, as it is with EDGEFLEET_SKIP_LEGACY=1.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$EDGEFLEET_ROOT"

ensure_system_packages
ensure_venv .venv "agent,server,compress,tf,dev"

status=0

section "ruff"
lint_paths=()
for path in agent fleet_server compression tests bench; do
    [[ -e "$path" ]] && lint_paths+=("$path")  # git keeps no empty directories
done
.venv/bin/ruff check "${lint_paths[@]}" || status=1

section "mypy (agent, fleet_server, compression: see [tool.mypy] in pyproject.toml)"
.venv/bin/mypy || status=1

section "pytest"
.venv/bin/python -m pytest "$@" || status=1

if [[ $# -gt 0 ]]; then
    section "legacy TFLite stage skipped (targeted run)"
elif [[ "${EDGEFLEET_SKIP_LEGACY:-0}" == "1" ]]; then
    section "legacy TFLite stage skipped (EDGEFLEET_SKIP_LEGACY=1)"
else
    ensure_venv .venv-tflite-legacy "agent-tflite-legacy,dev"
    section "legacy TFLite runtime: tests/agent with tflite-runtime 2.14 and numpy < 2"
    if .venv-tflite-legacy/bin/python -c \
        'import numpy, tflite_runtime.interpreter as t; assert numpy.__version__ < "2"; print("numpy", numpy.__version__, "tflite_runtime", t.__name__)'; then
        .venv-tflite-legacy/bin/python -m pytest tests/agent || status=1
    else
        printf 'error: tflite_runtime does not import in .venv-tflite-legacy\n' >&2
        status=1
    fi
fi

section "result"
if [[ $status -eq 0 ]]; then
    echo "all stages passed"
else
    echo "some stages failed (see above)"
fi
exit "$status"
