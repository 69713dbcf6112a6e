"""The harness's per-thread CPU accounting (benchmarks.procs.ThreadCpu), on real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.procs import ThreadCpu

BUSY = "import time\nend = time.time() + 3\nwhile time.time() < end: pass\n"
IDLE = "import time\nprint('sleeping', flush=True)\ntime.sleep(5)\n"
# A parent that sleeps while its child process burns CPU: the child is found through /proc children.
PARENT = f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {BUSY!r}])\n"


def children_of(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in children.read_text().split()] if children.exists() else []


def test_busy_threads_and_child_processes_are_counted_idle_ones_are_not() -> None:
    idle = subprocess.Popen([sys.executable, "-c", IDLE], stdout=subprocess.PIPE)
    parent = subprocess.Popen([sys.executable, "-c", PARENT])
    try:
        # Both interpreters have started: the idle one says so before it sleeps, the parent has its busy child.
        assert idle.stdout is not None and idle.stdout.readline() == b"sleeping\n"
        deadline = time.monotonic() + 10
        while not children_of(parent.pid):
            assert time.monotonic() < deadline, "the parent started no child"
            time.sleep(0.01)
        with ThreadCpu([idle.pid, parent.pid]) as cpu:
            time.sleep(0.4)
        busiest, seconds = max(cpu.seconds.items(), key=lambda kv: kv[1])
        assert seconds >= 0.2, cpu.seconds
        assert not busiest.startswith((f"{idle.pid}/", f"{parent.pid}/")), "the busy thread is the child's"
        assert all(s < 0.1 for k, s in cpu.seconds.items() if k.startswith(f"{idle.pid}/")), cpu.seconds
        per = cpu.micros_per(1000)
        assert per[busiest] == round(seconds * 1e6 / 1000, 2)
        assert list(per) == sorted(per, key=lambda k: -per[k])
        assert cpu.micros_per(0) == {}
        # The busy thread never sleeps; the idle one slept through the block (a stray wake-up or two at most).
        assert cpu.wakeups.get(busiest, 0) < 5, cpu.wakeups
        assert all(n <= 2 for k, n in cpu.wakeups.items() if k.startswith(f"{idle.pid}/")), cpu.wakeups
        assert cpu.wakeups_per(0) == {}
    finally:
        for child in children_of(parent.pid):
            os.kill(child, signal.SIGKILL)
        idle.kill()
        parent.kill()
        parent.wait(10)
        idle.wait(10)
        if idle.stdout is not None:
            idle.stdout.close()


def test_wakeups_count_each_sleep() -> None:
    """A thread that sleeps 50 times (10 ms each) between two lines of input wakes about 50 times."""
    code = ("import sys, time\nsys.stdin.readline()\nfor _ in range(50): time.sleep(0.01)\n"
            "print('done', flush=True)\nsys.stdin.readline()\n")
    sleeper = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert sleeper.stdin is not None and sleeper.stdout is not None
    try:
        time.sleep(0.3)  # started, waiting for its first line
        with ThreadCpu([sleeper.pid]) as cpu:
            sleeper.stdin.write(b"go\n")
            sleeper.stdin.flush()
            assert sleeper.stdout.readline() == b"done\n"
        (main,) = [k for k in cpu.wakeups if k.endswith(f"/{sleeper.pid}")]
        assert 50 <= cpu.wakeups[main] <= 60, cpu.wakeups
        assert cpu.wakeups_per(50)[main] == round(cpu.wakeups[main] / 50, 3)
    finally:
        sleeper.kill()
        sleeper.wait(10)
        sleeper.stdin.close()
        sleeper.stdout.close()
