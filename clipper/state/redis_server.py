"""A managed `redis-server`: its command line, a child process for tests, and a supervisor.

    server = RedisServer(port=6390).start()   # waits until it answers PING
    ...
    server.stop()                              # SIGTERM, then SIGKILL after a grace period

`RedisServer` keeps its data in memory only (``--save '' --appendonly no``) unless it is given a
`data_dir`: the state lives as long as the process. The container managers build their Redis
command line with `redis_argv`: with a data directory, Redis writes an append-only file there
(``appendonly yes``, ``appendfsync everysec``, no RDB snapshots) and loads it when it starts.

The local container manager runs Redis under a supervisor, this file run as a script (standard
library only, so that it starts fast and small, with ``python -I``)::

    python -I clipper/state/redis_server.py supervise --status-file F -- redis-server --port ...

It starts redis-server as its child, in its own process group (the manager's session), and
restarts it on the same command line whenever it exits, after a backoff that doubles from
`MIN_BACKOFF_S` to `MAX_BACKOFF_S` (back to the minimum once Redis has run `STABLE_S` seconds). On
SIGTERM or SIGINT it passes the signal on, waits for Redis to exit (Redis writes its append-only
file out first) and exits. `F` (JSON, `read_supervisor_status`) names the current redis-server pid
and counts the restarts. Its messages go to its standard output, shared with Redis's log.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: The supervisor's restart backoff: first wait, longest wait, and the run time after which the
#: wait goes back to the first.
MIN_BACKOFF_S = 0.1
MAX_BACKOFF_S = 5.0
STABLE_S = 30.0
#: Name of the append-only directory Redis (7+) keeps under its data directory.
AOF_DIRNAME = "appendonlydir"


def redis_server_binary() -> str | None:
    """The path of `redis-server`, or None when it is not installed."""
    return shutil.which("redis-server")


def ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a Redis server at host:port answers PING (raw RESP, no client library needed)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def persistence_args(data_dir: str | os.PathLike[str] | None) -> list[str]:
    """redis-server flags for durability: an append-only file in `data_dir`, or none at all (None).

    ``appendfsync everysec``: every write is handed to the kernel before Redis answers it, so a
    crash or kill of redis-server loses nothing that was answered; the file is fsynced once a
    second, so a crash of the machine (or power loss) can lose about the last second of writes (up
    to two when the disk is slow). No RDB snapshots (``--save ''``): the append-only file is the copy.
    """
    if data_dir is None:
        return ["--save", "", "--appendonly", "no"]
    return ["--dir", str(Path(data_dir).resolve()), "--appendonly", "yes", "--appendfsync", "everysec",
            "--save", ""]


def redis_argv(port: int, host: str = "127.0.0.1", *, data_dir: str | os.PathLike[str] | None = None,
               binary: str | None = None, extra_args: Sequence[str] = ()) -> list[str]:
    """The command line of a redis-server on `host:port` (foreground, protected mode off)."""
    return [binary or redis_server_binary() or "redis-server", "--port", str(port), "--bind", host,
            *persistence_args(data_dir), "--daemonize", "no", "--protected-mode", "no", *extra_args]


def has_data(data_dir: str | os.PathLike[str]) -> bool:
    """True when `data_dir` holds an append-only file (or an RDB file) that Redis would load."""
    path = Path(data_dir)
    aof_dir = path / AOF_DIRNAME
    if aof_dir.is_dir() and any(aof_dir.iterdir()):
        return True
    return (path / "appendonly.aof").is_file() or (path / "dump.rdb").is_file()


def supervisor_argv(python: str, argv: Sequence[str], status_file: str | os.PathLike[str],
                    data_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """The command line of a supervisor that keeps `argv` (a redis-server) running; see the module doc.
    `data_dir` is created before each start (redis-server refuses a ``--dir`` that does not exist)."""
    extra = ["--data-dir", str(data_dir)] if data_dir is not None else []
    return [python, "-I", str(Path(__file__).resolve()), "supervise", "--status-file", str(status_file), *extra,
            "--", *argv]


def read_supervisor_status(status_file: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What a supervisor last wrote: ``{"supervisor_pid", "redis_pid", "restarts", "last_exit", "since"}``
    (None when there is no such file)."""
    try:
        with open(status_file) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class RedisServer:
    """One `redis-server` process bound to `host:port`; with `data_dir`, an append-only file there."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1", *, log_path: str | Path | None = None,
                 extra_args: list[str] | None = None, data_dir: str | Path | None = None) -> None:
        from ..ports import free_port  # here: the supervisor runs this file without its package

        self.host = host
        self.port = port if port is not None else free_port(host)
        self.log_path = Path(log_path) if log_path is not None else None
        self.extra_args = list(extra_args or [])
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.proc: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Starts the process and waits until it answers PING."""
        binary = redis_server_binary()
        if binary is None:
            raise FileNotFoundError("redis-server is not installed (Debian: apt-get install redis-server)")
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = redis_argv(self.port, self.host, data_dir=self.data_dir, binary=binary,
                          extra_args=["--loglevel", "warning", *self.extra_args])
        log = open(self.log_path, "ab") if self.log_path is not None else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        deadline = time.monotonic() + timeout
        while not ping(self.host, self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode} (port {self.port} taken?)")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"redis-server on {self.host}:{self.port} did not answer within {timeout} s")
            time.sleep(0.02)
        return self

    def stop(self, grace: float = 5.0) -> None:
        """Stops the process (SIGTERM, SIGKILL after `grace` seconds) and waits for it."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)

    def kill(self) -> None:
        """Kills the process at once (SIGKILL), as a crash would."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    def __enter__(self) -> RedisServer:
        return self.start() if not self.running else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------- the supervisor


def _say(message: str) -> None:
    print(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} redis supervisor (pid {os.getpid()}): {message}", flush=True)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _write_status(path: Path, status: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(status, f)
    os.replace(tmp, path)


def supervise(argv: Sequence[str], status_file: str | os.PathLike[str], *, min_backoff: float = MIN_BACKOFF_S,
              max_backoff: float = MAX_BACKOFF_S, stable_s: float = STABLE_S, grace: float = 30.0,
              data_dir: str | os.PathLike[str] | None = None) -> int:
    """Runs `argv` and restarts it whenever it exits, until SIGTERM/SIGINT; returns the exit status (0).
    `data_dir` is created (when missing) before each start."""
    status_path = Path(status_file)
    status_path.parent.mkdir(parents=True, exist_ok=True)
    stopping = False
    child: subprocess.Popen | None = None

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)  # a second SIGTERM (from the group) is harmless

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    restarts = 0
    last_exit: str | None = None
    backoff = min_backoff
    while not stopping:
        started = time.monotonic()
        try:
            if data_dir is not None:
                Path(data_dir).mkdir(parents=True, exist_ok=True)
            child = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL)
        except OSError as e:
            _say(f"cannot start {argv[0]}: {e}")
            child = None
            code = None
        else:
            if stopping:  # the signal came while it started: it did not get it
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)
            _write_status(status_path, {"supervisor_pid": os.getpid(), "redis_pid": child.pid, "restarts": restarts,
                                        "last_exit": last_exit, "since": time.time()})
            if restarts:
                _say(f"started redis-server again (pid {child.pid}, restart {restarts})")
            code = child.wait()
        if stopping:
            break
        ran = time.monotonic() - started
        if ran >= stable_s:
            backoff = min_backoff
        if code is not None:
            last_exit = _describe_exit(code)
            _say(f"redis-server (pid {child.pid if child else '?'}) exited with {last_exit} after {ran:.1f} s; "
                 f"restarting it in {backoff:g} s")
        until = time.monotonic() + backoff
        while not stopping and time.monotonic() < until:
            time.sleep(min(0.05, max(0.0, until - time.monotonic())))
        backoff = min(max_backoff, backoff * 2)
        restarts += 1
    if child is not None and child.returncode is None:
        try:
            child.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _say(f"redis-server (pid {child.pid}) did not stop within {grace:g} s; killing it")
            child.kill()
            child.wait()
    _say("stopped")
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The supervisor's parser. Standard library only (this file runs as a script with ``python -I``), so
    argparse's own ArgumentDefaultsHelpFormatter shows the defaults rather than `clipper.cmdline`."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="redis_server.py", description="Keeps a redis-server running.",
                                     formatter_class=fmt)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sup = sub.add_parser("supervise", help="run a command (redis-server ...) and restart it whenever it exits",
                         formatter_class=fmt)
    sup.add_argument("--status-file", required=True, help="JSON file: current pid and restart count")
    sup.add_argument("--min-backoff", type=_seconds, default=MIN_BACKOFF_S, help="seconds before the first restart")
    sup.add_argument("--max-backoff", type=_seconds, default=MAX_BACKOFF_S,
                     help="most seconds between restarts (the wait doubles up to it)")
    sup.add_argument("--data-dir", help="created before each start when missing")
    sup.add_argument("argv", nargs=argparse.REMAINDER, help="-- redis-server flags...")
    return parser


def main(args: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(args)
    argv = ns.argv[1:] if ns.argv[:1] == ["--"] else ns.argv
    if not argv:
        parser.error("supervise: no command given (after --)")
    return supervise(argv, ns.status_file, min_backoff=ns.min_backoff, max_backoff=ns.max_backoff,
                     data_dir=ns.data_dir)


if __name__ == "__main__":
    sys.exit(main())
