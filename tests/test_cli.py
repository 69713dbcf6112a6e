"""Every command line of the project: ``--version``, defaults and choices in ``--help``, one-line errors
for bad flag values (no traceback), and ``clipper images``. The commands run as subprocesses; the parsers
are also walked in process, action by action."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import benchmarks.__main__ as bench_main
import clipper
from benchmarks import floor_server, soak
from clipper import cli, images
from clipper._version import __version__
from clipper.frontend import query
from clipper.frontend.management import server as management
from clipper.model_runtime import __main__ as model_runtime
from clipper.state import redis_server

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = 60

#: Each command line: how to run it, and its parser.
COMMANDS: dict[str, tuple[list[str], Callable[[], argparse.ArgumentParser]]] = {
    "clipper": (["-m", "clipper"], cli.build_parser),
    "query": (["-m", "clipper.frontend.query"], query.build_parser),
    "management": (["-m", "clipper.frontend.management"], management.build_parser),
    "model_runtime": (["-m", "clipper.model_runtime"], model_runtime.build_parser),
    "images": (["-m", "clipper.images"], lambda: _images_parser()),
    "redis_server": (["-I", str(REPO / "clipper" / "state" / "redis_server.py")], redis_server.build_parser),
    "benchmarks": (["-m", "benchmarks"], bench_main.build_parser),
    "soak": (["-m", "benchmarks.soak"], soak.build_parser),
    "floor_server": (["-m", "benchmarks.floor_server"], floor_server.build_parser),
}
#: Options whose values form a closed set: each must have `choices`.
CLOSED = {"input_type", "log_level", "pipeline", "mode"}


def _images_parser() -> argparse.ArgumentParser:
    from clipper.cmdline import ArgumentParser

    ap = ArgumentParser(prog="python -m clipper.images")
    images.add_arguments(ap)
    return ap


def run(cmd: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    prefix, _ = COMMANDS[cmd]
    return subprocess.run([sys.executable, *prefix, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=TIMEOUT_S, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """The parser and every subcommand's parser, with the subcommand names leading to it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, (*path, name))


def test_version() -> None:
    done = run("clipper", "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"clipper {__version__}\n"
    assert clipper.__version__ == __version__


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_option_shows_its_default_and_closed_sets_are_choices(cmd: str) -> None:
    checked = 0
    for path, parser in walk(COMMANDS[cmd][1]()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.default in (None, argparse.SUPPRESS) or isinstance(action, argparse._HelpAction):
                continue
            if not (action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE)):
                continue
            shown = formatter._expand_help(action)
            assert "default" in shown, (cmd, *path, action.option_strings or action.dest, shown)
            checked += 1
        for action in parser._actions:
            if action.dest in CLOSED:
                assert action.choices, (cmd, *path, action.dest)
    assert checked, cmd


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_of_every_command_runs(cmd: str) -> None:
    """``--help`` of the program and of each of its subcommands, as a user runs them."""
    for path, parser in walk(COMMANDS[cmd][1]()):
        done = run(cmd, *path, "--help")
        assert done.returncode == 0 and not done.stderr, (cmd, path, done.stderr)
        if any(a.option_strings and a.default not in (None, argparse.SUPPRESS) for a in parser._actions
               if not isinstance(a, argparse._HelpAction)):
            assert "(default: " in done.stdout, (cmd, path, done.stdout)


def test_the_images_subcommand_is_python_m_clipper_images() -> None:
    """One parser for both: ``clipper images`` delegates to `clipper.images`."""
    (_, mine), = [(p, s) for p, s in walk(cli.build_parser()) if p == ("images",)]
    assert [a.option_strings for a in mine._actions] == [a.option_strings for a in _images_parser()._actions]
    for sub in ("build", "list", "rm"):
        ours = dict(walk(mine))[(sub,)]
        theirs = dict(walk(_images_parser()))[(sub,)]
        assert ([(a.option_strings, a.dest, a.default) for a in ours._actions]
                == [(a.option_strings, a.dest, a.default) for a in theirs._actions])


BAD_VALUES: list[tuple[str, tuple[str, ...], int, str]] = [
    ("clipper", ("deploy", "m", "--predict", "mod:f", "--input-type", "tensors"), 2, "unknown input type 'tensors'"),
    ("clipper", ("deploy", "m", "--predict", "mod:f", "--slo-micros", "abc"), 2, "--slo-micros: 'abc' is not"),
    ("clipper", ("deploy", "m", "--predict", "mod:f", "--batch-size", "0"), 2, "--batch-size"),
    ("clipper", ("deploy", "m", "--predict", "mod:f", "--replicas", "-1"), 2, "--replicas"),
    ("clipper", ("register-app", "a", "--slo-micros", "0"), 2, "--slo-micros: '0' must be at least 1"),
    ("clipper", ("start", "--query-port", "99999"), 2, "--query-port: '99999' is not a port"),
    ("clipper", ("start", "--redis-port", "-5"), 2, "--redis-port"),
    ("clipper", ("start", "--cache-size", "-1"), 2, "--cache-size: '-1' must not be negative"),
    ("clipper", ("start", "--timeout", "0"), 2, "--timeout"),
    ("clipper", ("replicas", "m", "-3"), 2, "num_replicas"),
    ("clipper", ("--no-such-flag", "status"), 2, "unrecognized arguments"),
    ("clipper", ("images", "rm"), 2, "name the images to remove, or pass --all"),
    ("clipper", ("images", "rm", "not-an-image"), 2, "not an image of this project: not-an-image"),
    ("clipper", ("status",), 1, "is not running"),
    ("clipper", ("apps",), 1, "clipper: error: No local Clipper cluster"),
    ("clipper", ("deploy", "m", "--predict", "mod:f"), 1, "clipper: error: No local Clipper cluster"),
    ("query", ("--port", "-5"), 2, "--port: '-5' is not a port"),
    ("query", ("--cache-size", "-1"), 2, "--cache-size"),
    ("query", ("--workers", "0"), 2, "--workers"),
    ("query", ("--log-level", "chatty"), 2, "--log-level: invalid choice"),
    ("management", ("--port", "70000"), 2, "--port"),
    ("management", ("--max-apps", "0"), 2, "--max-apps"),
    ("model_runtime", ("--name", "m", "--version", "1", "--input-type", "tensors"), 2, "unknown input type"),
    ("model_runtime", ("--name", "m", "--version", "1", "--heartbeat-interval", "0"), 2, "--heartbeat-interval"),
    ("images", ("rm", "--all", "base"), 2, "or pass --all"),
    ("redis_server", ("supervise", "--status-file", "x", "--min-backoff", "soon"), 2, "--min-backoff"),
    ("benchmarks", ("throughput", "--duration", "0"), 2, "--duration"),
    ("benchmarks", ("sweep", "--input-type", "tensors"), 2, "unknown input type"),
    ("benchmarks", ("sweep", "--env", "NOVALUE"), 2, "'NOVALUE' is not KEY=VALUE"),
    ("benchmarks", ("memory", "--connections", "0"), 2, "--connections"),
    ("soak", ("--duration", "-1"), 2, "--duration"),
    ("floor_server", ("--port", "65536"), 2, "--port"),
]


@pytest.mark.parametrize(("cmd", "args", "rc", "message"), BAD_VALUES,
                         ids=[f"{c}-{'-'.join(a)}" for c, a, _, _ in BAD_VALUES])
def test_a_bad_value_is_one_line_and_no_traceback(cmd: str, args: tuple[str, ...], rc: int, message: str,
                                                   tmp_path: Path) -> None:
    if cmd == "clipper":
        args = ("--cluster-name", "cli-bad-values", "--cluster-dir", str(tmp_path), *args)
    done = run(cmd, *args)
    assert done.returncode == rc, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    assert message in done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == (1 if done.stderr else 0), done.stderr


def test_a_dead_or_unreadable_cluster_is_one_line(tmp_path: Path) -> None:
    base = ("--cluster-name", "cli-stale", "--cluster-dir", str(tmp_path))
    state = {"query_port": 1, "management_port": 2, "rpc_port": 3, "log_dir": str(tmp_path),
             "redis": {"host": "127.0.0.1", "port": 4, "managed": True},
             "processes": [{"role": "redis", "pid": 2**22 + 1, "log": "redis.log"}], "replicas": []}
    (tmp_path / "cluster.json").write_text(json.dumps(state))
    for args in (("apps",), ("models",), ("predict", "app", "[1]")):
        done = run("clipper", *base, *args)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.startswith("clipper: error: The local Clipper cluster 'cli-stale' is not healthy")
    assert "NOT HEALTHY" in run("clipper", *base, "status").stdout
    (tmp_path / "cluster.json").write_text("{not json")
    done = run("clipper", *base, "apps")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("clipper: error: Cannot read the cluster state file")


def test_images_without_an_engine_is_one_line() -> None:
    pytest.importorskip("docker")
    for cmd, prefix in (("clipper", ("images",)), ("images", ())):
        done = run(cmd, *prefix, "list", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert "error: the Docker engine does not answer" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_remove_images_refuses_names_not_ours() -> None:
    with pytest.raises(images.ImageBuildError, match="unknown image.*nginx"):
        images.remove_images(["nginx:latest"])


# ----------------------------------------------------------------------------- with Docker


def _engine_problem() -> str | None:
    try:
        images.docker_client()
    except images.ImageBuildError as e:
        return str(e)
    return None


WHY = _engine_problem()
needs_docker = pytest.mark.skipif(WHY is not None, reason=f"no Docker engine: {WHY}")


@pytest.mark.docker
@needs_docker
def test_images_list() -> None:
    done = run("clipper", "images", "list")
    assert done.returncode == 0, done.stderr
    for name in images.IMAGE_NAMES:
        if name != "base" or not os.environ.get(images.BASE_ENV):
            assert images.image_ref(name) in done.stdout
    rows = json.loads(run("images", "list", "--json").stdout)
    names = {r["name"] for r in rows}
    assert set(images.IMAGE_NAMES) <= names <= set(images.RECIPES)  # the defaults, and those built on first use


@pytest.mark.docker
@needs_docker
def test_images_rm_of_an_absent_image_says_so() -> None:
    """Only a tag nobody builds: this test must not remove another session's images."""
    ref = "clipper/noop-container:cli-test-absent"
    done = run("clipper", "images", "rm", ref)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{ref}: not present, nothing to remove\n"
    assert images.remove_images([ref]) == {ref: "absent"}
