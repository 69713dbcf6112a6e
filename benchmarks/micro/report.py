"""A Markdown table from one or more pytest-benchmark JSON files (`--benchmark-json`), one row per benchmark:

    python -m benchmarks.micro.report benchmarks/results/micro-1.json benchmarks/results/micro-2.json ...

The median is the median of the runs' medians, with the lowest and highest run median beside it (the spread);
ops/s is 1 / that median (pytest-benchmark's own OPS column is 1 / mean, which the shared machine's stalls
inflate).
"""

from __future__ import annotations

import json
import statistics
import sys

#: test name prefix -> (operation, entry point) as the table names them
OPERATIONS = {
    "test_encode_input": "`_core.encode_input`",
    "test_slow_path_body": "`orjson.loads` + `_core.encode_input` (whole body)",
    "test_encode_simple_input": "`rust_core.encode_simple_input`",
    "test_json_fragment": "`_core.json_fragment`",
    "test_error_body": "`_core.error_body`",
    "test_submit_cache_hit": "`Engine.submit`, cache hit",
    "test_submit_cache_miss": "`Engine.submit`, cache miss",
    "test_request": "`HttpProtocol.data_received`, one request",
}

#: the input of the benchmarks that have no parameters
INPUTS = {
    "test_error_body": "a 60-character cause",
    "test_submit_cache_hit": "4 doubles (32 bytes)",
    "test_submit_cache_miss": "4 doubles (32 bytes), model without replicas",
}


def _duration(seconds: float) -> str:
    return f"{seconds * 1e9:,.0f} ns" if seconds < 1e-6 else f"{seconds * 1e6:,.2f} µs"


def table(paths: list[str]) -> str:
    medians: dict[str, list[float]] = {}
    groups: dict[str, str] = {}
    for path in paths:
        with open(path) as f:
            for bench in json.load(f)["benchmarks"]:
                medians.setdefault(bench["name"], []).append(bench["stats"]["median"])
                groups[bench["name"]] = bench["group"] or ""
    rows = ["| group | operation | input | median | spread of run medians | ops/s (1 / median) |",
            "|---|---|---|---:|---|---:|"]
    for name in sorted(medians, key=lambda n: (groups[n], min(medians[n]))):
        base, _, param = name.partition("[")
        values = medians[name]
        median = statistics.median(values)
        spread = f"{_duration(min(values))} – {_duration(max(values))}" if len(values) > 1 else ""
        rows.append(f"| {groups[name]} | {OPERATIONS.get(base, base)} | {param.rstrip(']') or INPUTS.get(base, '-')} | "
                    f"{_duration(median)} | {spread} | {1 / median:,.0f} |")
    return "\n".join(rows) + f"\n\n({len(paths)} run{'s' if len(paths) != 1 else ''})"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    print(table(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
