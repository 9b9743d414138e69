#!/usr/bin/env bash
# `make demo`: the main job end to end. Reads and edits an xl.cfg, then builds
# the lab (a real Xen 4.17 host in QEMU), boots it, creates a guest from an
# xl.cfg, shows `xl list` and the guest's console, and tears everything down.
set -euo pipefail
cd "$(dirname "$0")/.."
X=.venv/bin/xenkit
LAB=${XENKIT_DEMO_LAB:-demo}
work=$(mktemp -d)
cleanup() {
    $X lab destroy "$LAB" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

# 1. The xl.cfg language.
cp benchmarks/data/typical.cfg "$work/web-01.cfg"
step $X config show "$work/web-01.cfg"
step $X config set "$work/web-01.cfg" maxmem 8192
step $X config set "$work/web-01.cfg" memory 8192
step $X config set "$work/web-01.cfg" 'disk[+]' 'format=raw, vdev=xvdc, access=rw, target=/dev/vg0/logs'
step $X config check "$work/web-01.cfg"

# 2. The lab: a real Xen host, and a guest on it.
guest=docs/examples/lab-guest.cfg
name=$($X --json config show "$guest" | python3 -c 'import json,sys; print(json.load(sys.stdin)["config"]["name"])')
step $X lab build
step $X lab up "$LAB"
step $X config check "$guest"
step $X lab exec "$LAB" -- "cat > /tmp/$name.cfg <<'XENKIT_EOF'
$(cat "$guest")
XENKIT_EOF
xl create /tmp/$name.cfg"
log=/var/log/xen/console/guest-$name.log
for _ in $(seq 1 60); do
    $X lab exec "$LAB" -- "grep -q XENKIT-GUEST-UP $log" && break
    sleep 1
done
step $X lab exec "$LAB" -- xl list
step $X lab exec "$LAB" -- cat "$log"
step $X lab exec "$LAB" -- xl destroy "$name"
step $X lab destroy "$LAB"
