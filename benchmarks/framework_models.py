"""Small framework models for the throughput harness: ``python -m benchmarks.framework_models FRAMEWORK DIR``.

Writes a framework model directory (`clipper.deployers.framework`: func.pkl, the artefact, clipper_model.json) for
the harness's inputs (4 doubles) and prints the command line to measure it through the pipeline::

    python -m benchmarks.framework_models pytorch /tmp/bench-pytorch
    python -m benchmarks throughput --duration 10 \\
        --container-command "python -m clipper.model_runtime --model-path /tmp/bench-pytorch"

Each model is the same small network, 4 -> 16 (ReLU) -> 3, with the deployer's default function (each output row
as JSON). Add a framework by adding a function to `MAKERS`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from pathlib import Path


def _mlp():  # type: ignore[no-untyped-def]
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()


def pytorch_model() -> str:
    """The MLP as a PyTorch module (state dict), served by `clipper.deployers.pytorch`."""
    from clipper.deployers import framework, pytorch

    net = _mlp()
    return framework.save_framework_model(None, "pytorch", pytorch.LOADER, lambda d: pytorch.save_pytorch_model(d, net))


def onnx_model() -> str:
    """The MLP exported to ONNX (torch.onnx.export), served by ONNX Runtime (`clipper.deployers.onnx`)."""
    import torch

    from clipper.deployers import framework, onnx

    net = _mlp()

    def save(model_dir: Path) -> dict[str, str]:
        onnx.export_pytorch_model(net, torch.zeros(1, 4), model_dir / onnx.MODEL_RELATIVE_PATH)
        return {"model": onnx.MODEL_RELATIVE_PATH}

    return framework.save_framework_model(None, "onnx", onnx.LOADER, save)


#: Framework -> a function writing its model directory (a new temporary one) and returning its path.
MAKERS: dict[str, Callable[[], str]] = {"pytorch": pytorch_model, "onnx": onnx_model}


def main(argv: list[str] | None = None) -> int:
    """Writes the model directory of a framework to DIR and prints the harness's command line."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.framework_models", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("framework", choices=sorted(MAKERS))
    ap.add_argument("dir", type=Path, help="where to write the model directory (replaced)")
    args = ap.parse_args(argv)
    made = MAKERS[args.framework]()
    dest = args.dir.resolve()
    shutil.rmtree(dest, ignore_errors=True)
    shutil.move(made, dest)
    print(f'python -m benchmarks throughput --duration 10 --container-command '
          f'"{sys.executable} -m clipper.model_runtime --model-path {dest}"')
    return 0


if __name__ == "__main__":
    sys.exit(main())
