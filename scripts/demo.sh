#!/usr/bin/env bash
# `make demo`: the main job, end to end, on a scratch copy of example configs.
set -euo pipefail
cd "$(dirname "$0")/.."
X=.venv/bin/xenkit
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp benchmarks/data/typical.cfg "$work/web-01.cfg"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step $X config show "$work/web-01.cfg"
step $X config check "$work/web-01.cfg"
step $X config set "$work/web-01.cfg" memory 8192
step $X config set "$work/web-01.cfg" 'disk[+]' 'format=raw, vdev=xvdc, access=rw, target=/dev/vg0/web-01-logs'
step $X config unset "$work/web-01.cfg" cap
step $X config fmt --diff "$work/web-01.cfg" || true
step $X --json config check "$work/web-01.cfg"
