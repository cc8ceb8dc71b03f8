# mxvm developer tasks; `just --list` shows them. Python tools come from .venv
# (scripts/bootstrap makes it).

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := ".venv/bin"
nix := "nix --extra-experimental-features 'nix-command flakes'"
agent_runner := ".#nixosConfigurations.agent-guest.config.microvm.declaredRunner"

# Standalone mxvm: its own Postgres and Redis, and a coordinator on 127.0.0.1:8470.
up *ARGS:
    scripts/bootstrap && {{venv}}/mxvm up {{ARGS}}

# The test suite, exactly as CI runs it.
test *ARGS:
    scripts/bootstrap && {{venv}}/python -m pytest -q {{ARGS}}

# ruff (lint and format) and mypy --strict.
lint:
    {{venv}}/ruff check .
    {{venv}}/ruff format --check .
    {{venv}}/mypy

# Every benchmark in bench/ (each prints its figures, last line `name: value`).
bench:
    for f in bench/*.py; do n=$(basename "$f" .py); [ "$n" = __init__ ] || { echo "== $n"; {{venv}}/python -m "bench.$n"; }; done

# Scheduler + apply_plan on 10,000 nodes, 1,000 jobs x 100 (last line `placements_per_s: N`).
bench-scheduler *ARGS:
    scripts/bootstrap && {{venv}}/python -m bench.scheduler_commit {{ARGS}}

# --- microVM guests (Nix: nix/microvms/) ---------------------------------------------------

# Build the agent guest's microvm.nix runner (./result/bin/microvm-run).
vm-build-agent:
    {{nix}} build {{agent_runner}}

# Without Nix (or when Nix cannot build the runner) it boots the dev guest image under QEMU,
# so it works on any Linux box; VM=nix or VM=dev forces one. Extra ARGS: `-- CMD...`.

# Boot the agent guest and run `uname -a` (or ARGS) in it through the guest agent.
vm-run-agent *ARGS:
    #!/usr/bin/env bash
    set -euo pipefail
    scripts/bootstrap
    mode="${VM:-auto}"
    if [ "$mode" != dev ] && command -v nix >/dev/null; then
        # --json, not --print-out-paths: Debian's Nix 2.8 predates that flag.
        if built=$({{nix}} build --no-link --json {{agent_runner}}); then
            runner=$(echo "$built" | {{venv}}/python -c 'import json,sys; print(json.load(sys.stdin)[0]["outputs"]["out"])')
            exec {{venv}}/python scripts/vm-run-dev --runner "$runner" {{ARGS}}
        fi
        [ "$mode" = nix ] && exit 1
        echo "vm-run-agent: nix build failed; booting the dev guest image instead" >&2
    elif [ "$mode" = nix ]; then
        echo "vm-run-agent: VM=nix, but nix is not on PATH" >&2; exit 1
    fi
    exec {{venv}}/python scripts/vm-run-dev {{ARGS}}
