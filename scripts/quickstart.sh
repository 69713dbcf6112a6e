#!/usr/bin/env bash
# Sets up, then starts a query frontend and a model container locally and asks for predictions.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python3 examples/quickstart.py
