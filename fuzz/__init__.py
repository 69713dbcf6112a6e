"""Coverage-guided fuzzing of the decoders of untrusted input (see fuzz/README.md).

Python targets (atheris) live here, one module per target; the Rust targets are a cargo-fuzz
project in rust_core/fuzz/. Every target module has `NAME`, `setup() -> Target` and the corpus
`fuzz/corpus/<NAME>/`; `Target.check(data)` raises `Failure` (or lets an unexpected exception
through) when an invariant does not hold, and is what both atheris and the pytest replay
(tests/test_fuzz_regressions.py) call.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent
CORPUS = ROOT / "corpus"
DICTS = ROOT / "dicts"

#: Python target name -> module (under `fuzz.`), in the order the runner runs them.
PYTHON_TARGETS = {
    "http_request": "fuzz.target_http",
    "encode_input": "fuzz.target_encode_input",
    "admin_json": "fuzz.target_admin",
    "rpc_container": "fuzz.target_rpc_container",
}
#: Rust (cargo-fuzz) targets in rust_core/fuzz.
RUST_TARGETS = ("decode_inbound", "decode_request", "json_fragment", "http_parser", "simple_input", "zmtp_decoder")

#: The fuzzing tools, pinned here and nowhere else: the runner installs exactly these versions.
ATHERIS_VERSION = "3.0.0"
CARGO_FUZZ_VERSION = "0.13.2"


def corpus_files(name: str, root: Path = CORPUS) -> list[Path]:
    """The corpus inputs of one target, sorted."""
    folder = root / name
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
