#!/usr/bin/env bash
# Fuzzes every target for FUZZ_SECONDS (default 20) seconds each; see `python -m fuzz --help`.
# Needs the project's setup (scripts/setup.sh); installs atheris and cargo-fuzz when missing.
# Exit status: 0 no crash, 1 a target crashed or hung, 2 a tool could not be installed or built.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 -m fuzz "$@"
