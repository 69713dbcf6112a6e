"""Results files, tables and plots shared by the sweep-style subcommands."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.procs import log

RESULTS_DIR = Path(__file__).parent / "results"


def new_results(benchmark: str, options: dict) -> dict:
    """The common head of a results JSON."""
    return {
        "benchmark": benchmark,
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "options": options,
        "environment": {"python": sys.version.split()[0], "platform": platform.platform(),
                        "cpu_count": os.cpu_count(), "loadavg": os.getloadavg()},
        "error": None,
    }


def results_path(results: dict, suffix: str = ".json", name: str = "{stamp}-{benchmark}") -> Path:
    """``benchmarks/results/<name><suffix>``; `name` may use ``{stamp}`` (UTC) and ``{benchmark}``."""
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = results["timestamp"].replace("-", "").replace(":", "")
    return RESULTS_DIR / (name.format(stamp=stamp, benchmark=results["benchmark"]) + suffix)


def write_results(results: dict, name: str = "{stamp}-{benchmark}") -> Path:
    """Writes the results as JSON at `results_path`, or ``<name>-2.json``, ``-3`` ... if that is taken."""
    path = results_path(results, name=name)
    n = 1
    while path.exists():
        n += 1
        path = results_path(results, f"-{n}.json", name)
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


@contextlib.contextmanager
def recording_errors(results: dict, log_dir: Path) -> Iterator[None]:
    """Records a failed run (RuntimeError, ValueError, OSError, Ctrl-C) as ``results["error"]`` instead of raising;
    the processes' logs in `log_dir` are kept then."""
    try:
        yield
    except (RuntimeError, ValueError, OSError) as e:
        results["error"] = str(e)
        log(f"ERROR: {e}")
        log(f"process logs kept in {log_dir}")
    except KeyboardInterrupt:
        results["error"] = "interrupted"
        log("interrupted")


def finish(results: dict, log_dir: Path) -> int:
    """Writes the results JSON; removes `log_dir` after a run without error; the exit code (1 on error)."""
    log(f"results written to {write_results(results)}")
    if results["error"] is None:
        shutil.rmtree(log_dir, ignore_errors=True)
        return 0
    return 1


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def format_rows(rows: list[dict]) -> str:
    """One line per measured point (open- or closed-loop rows as made by ``loadtest``)."""
    head = (f"{'variant':26} {'load':>9} {'answers/s':>10} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
            f"{'default%':>8} {'non2xx':>6} {'errors':>6} {'batch mean/p99':>14} {'RSS MB':>7} ok")
    lines = [head]
    for r in rows:
        lat = r["latency_ms"]
        bs = r.get("batch_size") or {}
        batch = f"{_num(r.get('mean_batch'), '.1f')}/{_num(bs.get('p99'), '.0f')}"
        load = f"{r['rate']:.0f}/s" if r.get("load") == "open" else f"{r['connections']}c"
        lines.append(
            f"{r['variant']:26} {load:>9} {r['throughput']:>10,.0f} {_num(lat.get('p50'), '.2f'):>8} "
            f"{_num(lat.get('p95'), '.2f'):>8} {_num(lat.get('p99'), '.2f'):>8} "
            f"{_num(None if r['default_ratio'] is None else 100 * r['default_ratio'], '.2f'):>8} "
            f"{r['non_2xx']:>6} {r['errors']:>6} {batch:>14} {_num(r['rss']['max_mb'], '.1f'):>7} "
            f"{'yes' if r.get('meets_slo') else 'no'}"
        )
    return "\n".join(lines)


def pyplot():
    """matplotlib.pyplot on the Agg backend, or None (said once on stderr) without matplotlib: the figures
    and the JSON do not need it."""
    try:
        import matplotlib
    except ImportError:
        log("matplotlib is not installed (pip install -e '.[bench]'): no plot")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_latency_vs_throughput(series: dict[str, list[dict]], path: Path, title: str,
                               slo_ms: float | None = None, p50: bool = True,
                               marks: dict[str, dict | None] | None = None,
                               ylabel: str = "latency from scheduled send (ms)") -> Path | None:
    """p99 (solid) and p50 (dashed) latency against answers/s, one colour per series; SLO line.
    None when matplotlib is missing.

    ``marks``: a point per series to star (e.g. its capacity)."""
    plt = pyplot()
    if plt is None:
        return None
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for i, (label, rows) in enumerate(series.items()):
        pts = sorted((r["throughput"], r["latency_ms"]["p50"], r["latency_ms"]["p99"]) for r in rows
                     if r["latency_ms"].get("p99") is not None)
        if not pts:
            continue
        color = f"C{i % 10}"
        xs = [p[0] for p in pts]
        ax.plot(xs, [p[2] for p in pts], "o-", color=color, label=f"{label} p99")
        if p50:
            ax.plot(xs, [p[1] for p in pts], "x--", color=color, alpha=0.6, label=f"{label} p50")
        mark = (marks or {}).get(label)
        if mark is not None:
            ax.plot([mark["throughput"]], [mark["latency_ms"]["p99"]], "*", color=color, ms=16, mec="black")
    if slo_ms is not None:
        ax.axhline(slo_ms, color="red", linestyle=":", label=f"SLO {slo_ms:g} ms")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.set_xlabel("answers per second (2xx, predictions + defaults)")
    ax.set_ylabel(ylabel)
    ax.set_title("\n".join(textwrap.wrap(title, 100)), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
