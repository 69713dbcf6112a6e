#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine and builds it in place.
# Needs: Python 3.11+ with pip, a C compiler and Rust (cargo). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    missing=""
    for tool in gcc wrk redis-server debootstrap; do command -v "$tool" >/dev/null || missing="$missing $tool"; done
    if [ -n "$missing" ]; then
        echo "[setup] apt-get install$missing" >&2
        apt-get update -qq
        # debootstrap makes the Debian root filesystem of the Docker base image (clipper.images)
        apt-get install -y -qq build-essential wrk redis-server debootstrap >/dev/null
    fi
fi
command -v cargo >/dev/null || { echo "[setup] Rust (cargo) is required: https://rustup.rs" >&2; exit 1; }

echo "[setup] building the Rust engine and the Cython protocol (pip install -e .[test,bench])..." >&2
python3 -m pip install -q --disable-pip-version-check -e ".[test,bench]"
