#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian machine and builds it in place.
# Needs: Python 3.11+ with pip, a C compiler and Rust (cargo). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: build tools, wrk and redis-server (tests, benchmarks), debootstrap (the Docker base image,
# clipper.images), and the model-container libraries of the other languages: C++ (cmake, libzmq3-dev,
# cppzmq-dev), Java (default-jdk-headless, libzmq-java) and R (r-base-core, r-cran-pbdzmq); prometheus (the
# cluster's metrics server), chromium (the status page's browser test) and docker-registry (the registry the Swarm
# tests push images to, as Clipper's container_registry), valgrind (instructions per request, `benchmarks
# instructions`).
PACKAGES="build-essential pkg-config wrk redis-server debootstrap cmake libzmq3-dev cppzmq-dev
          default-jdk-headless libzmq-java r-base-core r-cran-pbdzmq prometheus chromium docker-registry valgrind"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    missing=""
    for pkg in $PACKAGES; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing="$missing $pkg"
    done
    if [ -n "$missing" ]; then
        echo "[setup] apt-get install$missing" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi
fi
command -v cargo >/dev/null || { echo "[setup] Rust (cargo) is required: https://rustup.rs" >&2; exit 1; }

echo "[setup] building the Rust engine and the Cython protocol (pip install -e .[test,bench])..." >&2
python3 -m pip install -q --disable-pip-version-check -e ".[test,bench]"
