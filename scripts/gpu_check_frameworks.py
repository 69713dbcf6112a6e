"""GPU check of the framework replicas (PyTorch, ONNX Runtime): ``python3 scripts/gpu_check_frameworks.py [OUT.json]``.

For a machine with a GPU (and torch built with CUDA). It runs what a replica runs, in this process and in real
replica processes (``python -m clipper.model_runtime``) driven over Clipper's RPC by a Python stand-in of the
query frontend, so it needs neither the Rust engine nor Docker:

1. the PyTorch loader (`clipper.deployers.pytorch.load_model`, through `load_closure`) of a state-dict module, a
   TorchScript module and a ``torch.export`` program: each must land on ``cuda`` when a GPU is visible, answer
   like the same model on the CPU (to float32 rounding), in eval mode under ``inference_mode``;
2. ``CUDA_VISIBLE_DEVICES=""`` -> ``cpu``; ``CLIPPER_TORCH_DEVICE=cpu`` -> ``cpu``; with two or more GPUs,
   ``CUDA_VISIBLE_DEVICES=1`` -> ``cuda:0`` being physical GPU 1 (``torch.cuda.get_device_name``);
3. a replica process per device setting (when pyzmq is importable) serving a batch of 64 over RPC, and the
   batch time on cuda vs cpu for a 1024-wide MLP (a rough figure, not a benchmark);
4. ONNX Runtime: the providers a session gets (the CUDA one only with ``onnxruntime-gpu``).

Prints one JSON report (also written to OUT.json when given) and exits 1 when a check fails. Without a GPU it
checks the CPU paths and says that the GPU ones were skipped.

Needs torch, numpy, cloudpickle (and pyzmq + pytest for step 3, onnxruntime for step 4), and this checkout with
its compiled ``clipper/rust_core.abi3.so`` (stable ABI: any CPython >= 3.11). On a machine whose Python lacks
pyzmq, bring its wheel, e.g. for a lent GPU machine with Python 3.12 (from the repository root here)::

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl pyzmq==27.3.0

and there (carrying ``clipper/rust_core.abi3.so`` and ``.whl``)::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
    PYTHONUNBUFFERED=1 python3 scripts/gpu_check_frameworks.py $OUT/gpu-check.json
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from clipper.deployers import framework, pytorch  # noqa: E402
from clipper.model_runtime.loader import load_closure  # noqa: E402

REPORT: dict[str, Any] = {"python": sys.version.split()[0], "torch": torch.__version__,
                          "cuda_available": torch.cuda.is_available(),
                          "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
                          "checks": [], "failed": []}


def check(name: str, ok: bool, **details: Any) -> None:
    REPORT["checks"].append({"check": name, "ok": bool(ok), **details})
    if not ok:
        REPORT["failed"].append(name)
    print(("ok   " if ok else "FAIL ") + name + (f" {details}" if details else ""), flush=True)


def mlp(width: int = 16) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.ReLU(), torch.nn.Linear(width, 3)).eval()


def rows(model: Any, inputs: Any) -> list[str]:
    if not torch.is_inference_mode_enabled():
        raise AssertionError("not under inference_mode")
    return [json.dumps(r) for r in model(pytorch.as_tensor(inputs, model)).tolist()]


def save(model: Any) -> str:
    return framework.save_framework_model(rows, "pytorch", pytorch.LOADER,
                                          lambda d: pytorch.save_pytorch_model(d, model))


def loader_checks(x: np.ndarray) -> dict[str, str]:
    net = mlp()
    with torch.inference_mode():
        want = net(torch.tensor(x, dtype=torch.float32)).numpy()
    kinds = {"state_dict": net, "torchscript": torch.jit.trace(net, torch.zeros(1, 4)),
             "exported_program": torch.export.export(net, (torch.zeros(2, 4),),
                                                     dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))}
    dirs = {}
    for kind, model in kinds.items():
        d = save(model)
        dirs[kind] = d
        predict = load_closure(d)
        got = np.array([json.loads(o) for o in predict(x)])
        expected = "cuda" if torch.cuda.is_available() else "cpu"
        check(f"loader {kind}: device {expected}", predict.device.type == expected, device=str(predict.device))
        check(f"loader {kind}: same outputs as the CPU model", np.allclose(got, want, rtol=1e-4, atol=1e-5),
              max_abs_diff=float(np.abs(got - want).max()))
    return dirs


def pythonpath() -> str:
    """This checkout first, then what PYTHONPATH already holds (e.g. carried wheels)."""
    root = str(Path(__file__).resolve().parents[1])
    return os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)


def device_in_subprocess(model_dir: str, env: dict[str, str]) -> str:
    """The device a fresh process's loader picks under `env`, and the GPU's name."""
    code = ("import sys, torch; from clipper.model_runtime.loader import load_closure; "
            "p = load_closure(sys.argv[1]); d = p.device; "
            "print(d, torch.cuda.get_device_name(d) if d.type == 'cuda' else '-')")
    out = subprocess.run([sys.executable, "-c", code, model_dir], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": pythonpath(), **env})
    if out.returncode != 0:
        return f"error: {out.stderr[-500:]}"
    return out.stdout.strip().splitlines()[-1]


def env_checks(model_dir: str) -> None:
    seen = device_in_subprocess(model_dir, {"CUDA_VISIBLE_DEVICES": ""})
    check("CUDA_VISIBLE_DEVICES='' -> cpu", seen.startswith("cpu"), seen=seen)
    seen = device_in_subprocess(model_dir, {pytorch.DEVICE_ENV: "cpu"})
    check("CLIPPER_TORCH_DEVICE=cpu -> cpu", seen.startswith("cpu"), seen=seen)
    if torch.cuda.device_count() >= 2:
        seen = device_in_subprocess(model_dir, {"CUDA_VISIBLE_DEVICES": "1"})
        check("CUDA_VISIBLE_DEVICES=1 -> cuda (physical GPU 1)",
              seen.startswith("cuda") and torch.cuda.get_device_name(1) in seen, seen=seen)


def replica_checks() -> None:
    """Real replica processes over RPC (tests/test_container_runtime.Frontend stands in for the query frontend)."""
    try:
        import zmq
    except ImportError:
        check("replica over RPC (skipped: pyzmq is not importable here)", True)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_container_runtime import Frontend, outputs_of  # type: ignore[import-not-found]

    big = mlp(1024)
    d = save(big)
    x = np.random.default_rng(1).normal(size=(64, 4))
    inputs = [row.astype("<f8").tobytes() for row in x]
    with torch.inference_mode():
        want = big(torch.tensor(x, dtype=torch.float32)).numpy()
    settings = {"cpu": {pytorch.DEVICE_ENV: "cpu"}}
    if torch.cuda.is_available():
        settings["cuda"] = {}
    ctx = zmq.Context()
    for label, env in settings.items():
        fe = Frontend(ctx)
        proc = subprocess.Popen([sys.executable, "-m", "clipper.model_runtime", "--model-path", d, "--name", "m",
                                 "--version", "1", "--port", str(fe.port), "--log-level", "INFO"],
                                env={**os.environ, "PYTHONPATH": pythonpath(), **env}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            ident, _ = fe.register(timeout=180)
            outs = outputs_of(fe.predict(ident, 0, 3, inputs), 0)  # warm-up (CUDA context, kernels); 3: doubles
            started = time.perf_counter()
            for i in range(1, 21):
                outs = outputs_of(fe.predict(ident, i, 3, inputs), i)
            per_batch_ms = (time.perf_counter() - started) / 20 * 1e3
            got = np.array([json.loads(o) for o in outs])
            check(f"replica on {label}: batch of 64 over RPC", np.allclose(got, want, rtol=1e-3, atol=1e-4),
                  per_batch_ms=round(per_batch_ms, 3))
        except Exception as e:  # noqa: BLE001 - reported
            check(f"replica on {label}: batch of 64 over RPC", False, error=f"{type(e).__name__}: {e}")
        finally:
            proc.terminate()
            log = proc.communicate(timeout=30)[0]
            REPORT.setdefault("replica_logs", {})[label] = log[-2000:]
            fe.close()
    ctx.term()
    shutil.rmtree(d, ignore_errors=True)


def onnx_checks() -> None:
    try:
        import onnxruntime as ort
    except ImportError:
        check("onnxruntime (skipped: not installed)", True)
        return
    from clipper.deployers import onnx as onnx_deployer

    providers = onnx_deployer.select_providers(ort.get_available_providers())
    REPORT["onnxruntime"] = {"version": ort.__version__, "available": ort.get_available_providers(),
                             "chosen": providers}
    check("onnxruntime providers chosen", bool(providers), chosen=providers)


def main() -> int:
    x = np.random.default_rng(0).normal(size=(33, 4))
    dirs = loader_checks(x)
    env_checks(dirs["state_dict"])
    replica_checks()
    onnx_checks()
    for d in dirs.values():
        shutil.rmtree(d, ignore_errors=True)
    if not torch.cuda.is_available():
        REPORT["note"] = "no GPU visible: only the CPU paths were checked"
    text = json.dumps(REPORT, indent=2)
    print(text)
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(text)
    return 1 if REPORT["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
