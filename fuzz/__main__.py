"""Runs every fuzz target for a while and reports run counts, coverage, corpus growth and crashes.

    python -m fuzz                          # every target, FUZZ_SECONDS (default 20) seconds each
    python -m fuzz --seconds 60 http_request decode_inbound
    python -m fuzz --merge                  # also merge what the run found into the committed corpora
    bash fuzz/run.sh ...                    # the same

Installs what is missing first (atheris with pip, cargo-fuzz with `cargo install`), builds the Rust
targets (`cargo fuzz build`; sanitizer flags need nightly features, so RUSTC_BOOTSTRAP=1 is set:
a stable toolchain works), then runs each target as libFuzzer does: new inputs go to
fuzz/.work/<target>/corpus (the committed seeds are read, never written, unless --merge), crash
inputs to fuzz/.work/<target>/artifacts. Exit status 1 when any target crashed (or hung), 2 when a
tool could not be installed or built.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import ATHERIS_VERSION, CARGO_FUZZ_VERSION, CORPUS, DICTS, PYTHON_TARGETS, ROOT, RUST_TARGETS, corpus_files

REPO = ROOT.parent
RUST_FUZZ = REPO / "rust_core" / "fuzz"
RUST_CORPUS = RUST_FUZZ / "corpus"
WORK = ROOT / ".work"
DICT_FOR = {"http_request": "http_request.dict", "admin_json": "json.dict", "encode_input": "json.dict",
            "json_fragment": "json.dict", "http_parser": "http_request.dict", "simple_input": "json.dict"}
#: libFuzzer lines worth echoing while a target runs.
_ECHO = re.compile(r"INITED|DONE|pulse|ERROR|==\d+==|Traceback|Failure|panicked|deadly signal|Test unit written|"
                   r"SUMMARY|timeout|out-of-memory|^\s*(File|raise|assert)")
_STATS = re.compile(r"cov: (\d+) ft: (\d+) corp: (\d+)/")


def log(message: str) -> None:
    print(f"[fuzz] {message}", file=sys.stderr, flush=True)


@dataclass
class Result:
    target: str
    engine: str
    seconds: float = 0.0
    runs: int = 0
    exec_per_s: int = 0
    cov_start: int = 0
    cov_end: int = 0
    features_end: int = 0
    seeds: int = 0
    corpus_start: int = 0
    corpus_end: int = 0
    new_units: int = 0
    exit_code: int = 0
    crashed: bool = False
    artifacts: list[str] = field(default_factory=list)
    log: str = ""

    def line(self) -> str:
        status = "CRASH " + " ".join(self.artifacts) if self.crashed else "no crash"
        return (f"{self.target:<15} {self.engine:<9} {self.runs:>10} runs in {self.seconds:5.1f} s "
                f"({self.exec_per_s}/s)  cov {self.cov_start}->{self.cov_end} ft {self.features_end}  "
                f"corpus {self.corpus_start}->{self.corpus_end} ({self.seeds} seeds, {self.new_units} new units)  "
                f"{status}")


# ---------------------------------------------------------------------- tools

def ensure_atheris() -> None:
    try:
        installed = importlib.metadata.version("atheris")
    except importlib.metadata.PackageNotFoundError:
        installed = None
    if installed != ATHERIS_VERSION:
        log(f"installing atheris {ATHERIS_VERSION} (pip install atheris=={ATHERIS_VERSION})...")
        subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
                        f"atheris=={ATHERIS_VERSION}"], check=True)


def cargo_env() -> dict[str, str]:
    env = dict(os.environ)
    env["RUSTC_BOOTSTRAP"] = "1"  # cargo-fuzz passes -Z flags (sanitizers): allowed on stable this way
    return env


def ensure_cargo_fuzz() -> None:
    if shutil.which("cargo") is None:
        raise RuntimeError("cargo is not installed (https://rustup.rs)")
    probe = subprocess.run(["cargo", "fuzz", "--version"], capture_output=True, text=True)
    if probe.returncode != 0 or CARGO_FUZZ_VERSION not in probe.stdout.split():
        log(f"installing cargo-fuzz {CARGO_FUZZ_VERSION} (cargo install cargo-fuzz --locked; about 1-2 minutes)...")
        subprocess.run(["cargo", "install", "cargo-fuzz", "--locked", "--version", CARGO_FUZZ_VERSION], check=True)


def rust_flags(sanitizer: str) -> list[str]:
    # -O: optimised; -a: debug assertions (and overflow checks) on, so arithmetic bugs panic too
    return ["-O", "-a", "-s", sanitizer]


def build_rust(sanitizer: str) -> str:
    """Builds the cargo-fuzz targets; returns the sanitizer that worked."""
    for choice in dict.fromkeys([sanitizer, "none"]):
        log(f"building the Rust fuzz targets (cargo fuzz build {' '.join(rust_flags(choice))}; "
            "the first build takes a few minutes)...")
        started = time.monotonic()
        proc = subprocess.run(["cargo", "fuzz", "build", *rust_flags(choice)], cwd=RUST_FUZZ.parent, env=cargo_env())
        if proc.returncode == 0:
            log(f"built in {time.monotonic() - started:.0f} s (sanitizer: {choice})")
            return choice
        log(f"cargo fuzz build with sanitizer {choice} failed (exit {proc.returncode})")
    raise RuntimeError("cargo fuzz build failed")


# ---------------------------------------------------------------------- running

def run_libfuzzer(result: Result, argv: list[str], cwd: Path, env: dict[str, str] | None, log_path: Path,
                  budget: float) -> None:
    """Runs one libFuzzer process, echoing its important lines and parsing its statistics."""
    started = time.monotonic()
    with open(log_path, "w") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", start_new_session=True)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                out.write(line)
                if _ECHO.search(line):
                    print(f"  {result.target}: {line.rstrip()[:300]}", file=sys.stderr, flush=True)
                parse_line(result, line)
            proc.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            log(f"{result.target}: still running {budget:.0f} s after its budget; stopping it")
            proc.kill()
            proc.wait()
            result.crashed = True
        finally:
            try:  # the target's own children (the admin target's redis-server) go with it
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    result.seconds = round(time.monotonic() - started, 1)
    result.exit_code = proc.returncode
    result.log = str(log_path)


def parse_line(result: Result, line: str) -> None:
    m = _STATS.search(line)
    if m and "INITED" in line:
        result.cov_start, result.corpus_start = int(m.group(1)), int(m.group(3))
    if m:
        result.cov_end, result.features_end, result.corpus_end = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if line.startswith("stat::number_of_executed_units:"):
        result.runs = int(line.split(":")[-1])
    elif line.startswith("stat::average_exec_per_sec:"):
        result.exec_per_s = int(line.split(":")[-1])
    elif line.startswith("stat::new_units_added:"):
        result.new_units = int(line.split(":")[-1])
    elif line.startswith("Done ") and " runs in " in line:
        result.runs = int(line.split()[1])


def fuzz_target(name: str, seconds: int, sanitizer: str, merge: bool) -> Result:
    rust = name in RUST_TARGETS
    work = WORK / name
    corpus, artifacts = work / "corpus", work / "artifacts"
    corpus.mkdir(parents=True, exist_ok=True)
    if artifacts.exists():
        shutil.rmtree(artifacts)
    artifacts.mkdir(parents=True)
    seeds = (RUST_CORPUS if rust else CORPUS) / name
    result = Result(name, "cargo-fuzz" if rust else "atheris", seeds=len(corpus_files(name, seeds.parent)))
    options = [f"-max_total_time={seconds}", "-print_final_stats=1", f"-artifact_prefix={artifacts}/",
               "-timeout=20", "-rss_limit_mb=4096", "-max_len=4096"]
    if name in DICT_FOR:
        options.append(f"-dict={DICTS / DICT_FOR[name]}")
    if rust:
        argv = ["cargo", "fuzz", "run", *rust_flags(sanitizer), name, str(corpus), str(seeds), "--", *options]
        cwd, env = RUST_FUZZ.parent, cargo_env()
    else:
        argv = [sys.executable, "-m", "fuzz.atheris_main", name, *options, str(corpus), str(seeds)]
        cwd, env = REPO, None
    log(f"{name}: fuzzing for {seconds} s ({result.engine}, seeds from {seeds.relative_to(REPO)})")
    run_libfuzzer(result, argv, cwd, env, work / "fuzz.log", budget=seconds + 120)
    result.artifacts = sorted(str(p) for p in artifacts.iterdir())
    result.crashed = result.crashed or result.exit_code != 0 or bool(result.artifacts)
    if merge and not result.crashed:
        merge_corpus(name, rust, sanitizer, seeds, corpus)
    return result


def merge_corpus(name: str, rust: bool, sanitizer: str, seeds: Path, corpus: Path) -> None:
    """Adds to the committed corpus the inputs of this run that reach new coverage (libFuzzer -merge=1)."""
    before = len(list(seeds.iterdir()))
    if rust:
        argv = ["cargo", "fuzz", "run", *rust_flags(sanitizer), name, str(seeds), str(corpus), "--", "-merge=1"]
        subprocess.run(argv, cwd=RUST_FUZZ.parent, env=cargo_env(), capture_output=True, check=True)
    else:
        argv = [sys.executable, "-m", "fuzz.atheris_main", name, "-merge=1", str(seeds), str(corpus)]
        proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        proc.wait()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    log(f"{name}: merged {len(list(seeds.iterdir())) - before} inputs into {seeds.relative_to(REPO)}")


def main(argv: list[str] | None = None) -> int:
    all_targets = [*PYTHON_TARGETS, *RUST_TARGETS]
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("targets", nargs="*", metavar="TARGET",
                        help=f"targets to run (default: all of {', '.join(all_targets)})")
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", "20")),
                        help="fuzzing time per target (default: $FUZZ_SECONDS or 20)")
    parser.add_argument("--merge", action="store_true", help="merge new coverage into the committed corpora")
    parser.add_argument("--fresh", action="store_true", help="forget the corpora of earlier local runs")
    parser.add_argument("--sanitizer", default=os.environ.get("FUZZ_RUST_SANITIZER", "address"),
                        help="cargo-fuzz sanitizer: address (default), none, ... (falls back to none)")
    parser.add_argument("--build-only", action="store_true",
                        help="install the tools and build the targets, fuzz nothing (CI builds them early)")
    args = parser.parse_args(argv)
    targets = args.targets or all_targets
    unknown = [t for t in targets if t not in all_targets]
    if unknown:
        parser.error(f"unknown targets {unknown}; choose from {all_targets}")
    started = time.monotonic()
    if args.fresh and WORK.exists():
        shutil.rmtree(WORK)
    sanitizer = args.sanitizer
    try:
        if any(t in PYTHON_TARGETS for t in targets):
            ensure_atheris()
        if any(t in RUST_TARGETS for t in targets):
            ensure_cargo_fuzz()
            sanitizer = build_rust(sanitizer)
    except (RuntimeError, subprocess.CalledProcessError) as e:
        log(f"setup failed: {e}")
        return 2
    if args.build_only:
        return 0
    results = [fuzz_target(name, args.seconds, sanitizer, args.merge) for name in targets]
    total = time.monotonic() - started
    print("\nfuzz summary (runs: executions; cov: coverage counters hit, after loading the corpus -> at the end; "
          "corpus: inputs kept, same)")
    for r in results:
        print("  " + r.line())
    crashed = [r for r in results if r.crashed]
    print(f"total {sum(r.runs for r in results)} runs, {len(crashed)} target(s) crashed, {total:.0f} s in all")
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "summary.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
    for r in crashed:
        print(f"\n{r.target} crashed (exit {r.exit_code}); log: {r.log}")
        for a in r.artifacts:
            flags = " ".join(rust_flags(sanitizer))
            repro = (f"cd rust_core && RUSTC_BOOTSTRAP=1 cargo fuzz run {flags} {r.target} {a}"
                     if r.target in RUST_TARGETS else f"python -m fuzz.atheris_main {r.target} {a}")
            print(f"  reproduce: {repro}")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
