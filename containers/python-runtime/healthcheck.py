#!/usr/bin/env python3
"""HEALTHCHECK of the frontend images: ``clipper-healthcheck PATH DEFAULT_PORT``.

GETs http://127.0.0.1:<port><PATH>, where <port> is the ``--port`` the frontend process in this
container was started with (found in /proc), else DEFAULT_PORT. Exit 0 on a 2xx answer, else 1.
"""

import os
import sys
import urllib.request


def frontend_port(default: str) -> str:
    for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not any(a.startswith("clipper.frontend.") for a in args):
            continue
        for i, arg in enumerate(args):
            if arg == "--port" and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith("--port="):
                return arg.split("=", 1)[1]
        return default
    return default


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else "/metrics"
    port = frontend_port(sys.argv[2] if len(sys.argv) > 2 else "1337")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as resp:
            return 0 if 200 <= resp.status < 300 else 1
    except Exception as e:  # noqa: BLE001 - any failure means unhealthy
        print(f"unhealthy: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
