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
# A parent that sleeps while its child process burns CPU: the child is found through /proc children.
PARENT = f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {BUSY!r}])\n"


def test_busy_threads_and_child_processes_are_counted_idle_ones_are_not() -> None:
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    parent = subprocess.Popen([sys.executable, "-c", PARENT])
    try:
        time.sleep(0.3)  # both interpreters have started
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
    finally:
        children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children")
        for child in children.read_text().split() if children.exists() else []:
            os.kill(int(child), signal.SIGKILL)
        idle.kill()
        parent.kill()
        parent.wait(10)
        idle.wait(10)
