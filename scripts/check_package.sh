#!/usr/bin/env bash
# What a user who only `pip install`s gets, checked from outside the source tree:
#   1. the sdist, then a wheel built from the sdist alone (so the sdist holds all the build needs);
#   2. that wheel installed into a clean virtual environment (what `pip install` of the sdist does: build
#      a wheel as in 1, install it), first without extras (the frontends and the model runtime import; the
#      admin side says which extra it needs), then with `[admin]`;
#   3. from there, Clipper's quickstart on local processes, and on Docker when the engine answers
#      (the images built from the installed package: no checkout anywhere on the path).
# Exits non-zero when any step fails. CHECK_PACKAGE_DOCKER=0 skips the Docker quickstart.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
work=$(mktemp -d /tmp/clipper-package-XXXXXX)
trap 'rm -rf "$work"' EXIT
unset CLIPPER_SOURCE_DIR
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$work/target}"  # one given (CI: the checkout's) saves compiling the crates
step() { echo "[package] $*" >&2; }

step "sdist"
python3 -m build --sdist -o "$work/dist" . >"$work/sdist.log" 2>&1 || { tail -40 "$work/sdist.log"; exit 1; }
sdist=$(ls "$work"/dist/*.tar.gz)
step "wheel from $(basename "$sdist") alone (Rust + Cython build, a few minutes)"
python3 -m pip wheel -q --no-deps -w "$work/dist" "$sdist" >"$work/wheel.log" 2>&1 || { tail -40 "$work/wheel.log"; exit 1; }
wheel=$(ls "$work"/dist/*.whl)

# Clipper's quickstart, with only its import lines changed (and the manager named on them)
cp "$src/examples/quickstart.py" "$work/quickstart.py"
sed 's/LocalContainerManager/DockerContainerManager/g' "$src/examples/quickstart.py" >"$work/quickstart_docker.py"

venv="$work/venv"
step "clean virtual environment, pip install $(basename "$wheel")"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check "$wheel" >"$work/install.log" 2>&1 \
    || { tail -40 "$work/install.log"; exit 1; }
(cd "$work" && "$venv/bin/python" - <<'PY'
import importlib.util, subprocess, sys
import clipper, clipper._core, clipper.rust_core  # the compiled modules of the installed package
assert "site-packages" in clipper.__file__, clipper.__file__
assert importlib.util.find_spec("requests") is None and importlib.util.find_spec("docker") is None
for module in ("clipper.frontend.query", "clipper.frontend.management", "clipper.model_runtime"):
    subprocess.run([sys.executable, "-m", module, "--help"], check=True, capture_output=True)
try:
    clipper.ClipperConnection
except ModuleNotFoundError as e:
    assert "clipper-serving[admin]" in str(e), e
else:
    raise AssertionError("ClipperConnection imported without the admin extra")
print(f"[package]   clipper {clipper.__version__}: frontends and runtime without the admin extra; "
      "ClipperConnection asks for it")
PY
)
"$venv/bin/pip" install -q --disable-pip-version-check "$wheel[admin]" >>"$work/install.log" 2>&1 \
    || { tail -40 "$work/install.log"; exit 1; }
step "the quickstart on local processes"
(cd "$work" && "$venv/bin/python" quickstart.py)
"$venv/bin/clipper" --version >/dev/null 2>&1 || "$venv/bin/clipper" --help >/dev/null

if [ "${CHECK_PACKAGE_DOCKER:-1}" != 0 ] && docker info >/dev/null 2>&1; then
    # Only the images the quickstart uses (the default set adds the no-op and scikit-learn images: a minute more).
    step "python -m clipper.images build (the images get the installed package, not a checkout)"
    (cd "$work" && "$venv/bin/python" -m clipper.images build \
        redis query_frontend management_frontend python-closure-container)
    step "the quickstart on Docker"
    (cd "$work" && "$venv/bin/python" quickstart_docker.py)
else
    step "Docker quickstart skipped: the Docker engine does not answer (or CHECK_PACKAGE_DOCKER=0)"
fi
step "passed"
