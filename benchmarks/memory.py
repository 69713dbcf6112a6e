"""The ``memory`` subcommand: the query frontend's RSS under steady full load, sampled over time."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks import report, serving, wrkrun
from benchmarks.procs import HOST, RssSampler, app_prediction_counts, log, read_metrics, rss_summary
from benchmarks.serving import Variant
from benchmarks.throughput import Seeds


@dataclass
class MemoryOptions:
    duration: int = 60
    interval: float = 5.0
    connections: int = 64
    predict: str = "clipper.model_runtime.models:noop"
    slo_ms: float = 100.0


def _plot(samples: list[tuple[float, float]], path: Path, title: str) -> Path | None:
    plt = report.pyplot()
    if plt is None:
        return None

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([t for t, _ in samples], [m for _, m in samples], "o-", ms=3)
    ax.set_xlabel("seconds")
    ax.set_ylabel("query frontend VmRSS (MB)")
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_memory(o: MemoryOptions) -> int:
    """wrk at full load for ``duration`` seconds (unique inputs); RSS every ``interval`` seconds."""
    results = report.new_results("memory", asdict(o))
    log_dir = Path(tempfile.mkdtemp(prefix="clipper-bench-"))
    v = Variant(-1, 0, o.slo_ms)
    srv = None
    try:
        srv = serving.start([v], o.predict, log_dir)
        url = f"http://{HOST}:{srv.port}/{v.name}/predict"
        log(f"steady load: wrk {o.connections} connections for {o.duration}s, RSS every {o.interval:g}s")
        before = app_prediction_counts(read_metrics(srv.port), v.name)
        with RssSampler(srv.frontend_pid, o.interval) as rss:
            res, raw = wrkrun.run(url, connections=o.connections, duration_s=o.duration, threads=1, mode="unique",
                                  seed=Seeds()())
        after = app_prediction_counts(read_metrics(srv.port), v.name)
        half = [s for s in rss.samples if s[0] >= rss.samples[-1][0] / 2]
        results.update(wrk=res.to_dict(), rss=rss.summary(), rss_second_half=rss_summary(half),
                       samples=rss.samples, predictions=after[0] - before[0] if before and after else None,
                       defaults=after[1] - before[1] if before and after else None)
        s = results["rss"]
        print(f"{res.requests_per_s:,.0f} req/s for {o.duration}s (p99 {res.p99_ms} ms, non-2xx {res.non_2xx}, "
              f"socket errors {res.errors}, defaults {results['defaults']})")
        print(f"query frontend RSS: first {s['first_mb']} MB, last {s['last_mb']} MB, max {s['max_mb']} MB, "
              f"slope {s['slope_mb_per_min']} MB/min overall, "
              f"{results['rss_second_half']['slope_mb_per_min']} MB/min over the second half ({s['samples']} samples)")
        png = report.results_path(results, ".png")
        if _plot(rss.samples, png, f"query frontend RSS under wrk -c{o.connections} ({res.requests_per_s:,.0f} req/s)"):
            results["plot"] = str(png)
            log(f"plot written to {png}")
    except (RuntimeError, ValueError, OSError) as e:
        results["error"] = str(e)
        log(f"ERROR: {e}; process logs kept in {log_dir}")
    except KeyboardInterrupt:
        results["error"] = "interrupted"
    finally:
        if srv is not None:
            srv.stop()
    log(f"results written to {report.write_results(results)}")
    if results["error"] is None:
        shutil.rmtree(log_dir, ignore_errors=True)
        return 0
    return 1
