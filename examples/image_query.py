"""An image query client, after Clipper's examples/image_query: a model on raw image bytes, fed base64 over HTTP.

    python examples/image_query.py                     # a few generated sample images, each sent once
    python examples/image_query.py a.png b.pgm          # your own files (PNG, PGM/PPM)
    python examples/image_query.py --count 0            # cycle through the images until Ctrl-C

Starts a local cluster (`LocalContainerManager`, Clipper's ports, or free ones with `--free-ports`), registers
the app `image-example` with input type `bytes` and deploys a Python closure as its model. The model decodes
each input with numpy and the standard library alone (8-bit PNG of any colour type, non-interlaced; binary
PGM/PPM) and answers JSON: format, width, height, channels and the mean pixel value; an input it cannot
decode gets `{"error": ...}` (the other images of the batch are still answered). The client reads each file,
base64-encodes it, posts `{"input": "<base64>"}` and prints the answer and its latency. Without files it
writes sample images (a PNG gradient, a PGM checkerboard, a PPM of one colour) to a temporary folder first.
Ctrl-C (or SIGTERM) stops; the cluster is always stopped on the way out.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import signal
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import requests

from clipper import ClipperConnection, LocalContainerManager
from clipper.deployers import python as python_deployer

APP = "image-example"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel (8-bit; palettes not handled)


# ------------------------------------------------------------------------------------ decoding (in the model)

def _unfilter_png(raw: bytes, height: int, stride: int, bpp: int) -> np.ndarray:
    """Undoes PNG's per-row filters (None, Sub, Up, Average, Paeth); returns (height, stride) uint8."""
    out = np.zeros((height, stride), dtype=np.uint8)
    prior = bytearray(stride)
    at = 0
    for y in range(height):
        kind = raw[at]
        row = bytearray(raw[at + 1:at + 1 + stride])
        at += 1 + stride
        if len(row) != stride:
            raise ValueError("truncated PNG image data")
        if kind == 1:
            for i in range(bpp, stride):
                row[i] = (row[i] + row[i - bpp]) & 0xFF
        elif kind == 2:
            for i in range(stride):
                row[i] = (row[i] + prior[i]) & 0xFF
        elif kind == 3:
            for i in range(stride):
                left = row[i - bpp] if i >= bpp else 0
                row[i] = (row[i] + ((left + prior[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = row[i - bpp] if i >= bpp else 0
                b = prior[i]
                c = prior[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        elif kind != 0:
            raise ValueError(f"unknown PNG filter type {kind}")
        out[y] = np.frombuffer(bytes(row), dtype=np.uint8)
        prior = row
    return out


def decode_png(data: bytes) -> np.ndarray:
    """An 8-bit, non-interlaced PNG -> (height, width, channels) uint8."""
    at, header, chunks = len(PNG_SIGNATURE), None, []
    while at + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        body = data[at + 8:at + 8 + length]
        at += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        elif kind == b"IEND":
            break
    if header is None:
        raise ValueError("PNG without IHDR")
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in PNG_CHANNELS or interlace:
        raise ValueError(f"unsupported PNG (bit depth {depth}, colour type {colour}, interlace {interlace})")
    channels = PNG_CHANNELS[colour]
    pixels = _unfilter_png(zlib.decompress(b"".join(chunks)), height, width * channels, channels)
    return pixels.reshape(height, width, channels)


def decode_pnm(data: bytes) -> np.ndarray:
    """A binary PGM (P5) or PPM (P6) with maxval <= 255 -> (height, width, channels) uint8."""
    fields: list[bytes] = []
    at = 2
    while len(fields) < 3:
        while data[at:at + 1].isspace():
            at += 1
        if data[at:at + 1] == b"#":  # a comment, to the end of its line
            at = data.index(b"\n", at) + 1
            continue
        end = at
        while end < len(data) and not data[end:end + 1].isspace():
            end += 1
        fields.append(data[at:end])
        at = end
    width, height, maxval = (int(f) for f in fields)
    if maxval > 255:
        raise ValueError("16-bit PGM/PPM is not handled")
    channels = 1 if data[:2] == b"P5" else 3
    pixels = np.frombuffer(data, dtype=np.uint8, count=width * height * channels, offset=at + 1)
    return pixels.reshape(height, width, channels)


def describe(data: bytes) -> dict:
    """What the model answers for one image."""
    if data.startswith(PNG_SIGNATURE):
        kind, pixels = "png", decode_png(data)
    elif data[:2] in (b"P5", b"P6"):
        kind, pixels = ("pgm" if data[:2] == b"P5" else "ppm"), decode_pnm(data)
    else:
        raise ValueError(f"not a PNG, PGM or PPM image (starts with {data[:8]!r})")
    height, width, channels = pixels.shape
    return {"format": kind, "width": width, "height": height, "channels": channels,
            "mean": round(float(pixels.mean()), 3)}


def image_stats(images):
    """The model: a batch of images (uint8 arrays of each input's bytes) -> one JSON answer per image."""
    outputs = []
    for image in images:
        try:
            outputs.append(json.dumps(describe(np.asarray(image, dtype=np.uint8).tobytes())))
        except Exception as e:  # a bad image is answered; the rest of the batch still is
            outputs.append(json.dumps({"error": f"{type(e).__name__}: {e}"}))
    return outputs


# ------------------------------------------------------------------------------------ sample images (client)

def png_bytes(pixels: np.ndarray) -> bytes:
    """(height, width, 1 or 3) uint8 -> a PNG (grey or RGB, every row filter None)."""
    height, width, channels = pixels.shape
    colour = {1: 0, 3: 2}[channels]

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    rows = b"".join(b"\x00" + pixels[y].tobytes() for y in range(height))
    return (PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def pnm_bytes(pixels: np.ndarray) -> bytes:
    """(height, width, 1 or 3) uint8 -> a binary PGM or PPM."""
    height, width, channels = pixels.shape
    return b"%s\n%d %d\n255\n" % (b"P5" if channels == 1 else b"P6", width, height) + pixels.tobytes()


def write_samples(folder: Path) -> list[Path]:
    gradient = np.zeros((48, 64, 3), dtype=np.uint8)
    gradient[..., 0] = np.arange(64, dtype=np.uint8)[None, :] * 4
    gradient[..., 1] = np.arange(48, dtype=np.uint8)[:, None] * 5
    checker = ((np.indices((32, 32)).sum(axis=0) // 8) % 2 * 255).astype(np.uint8)[..., None]
    colour = np.broadcast_to(np.array([200, 100, 50], dtype=np.uint8), (10, 20, 3))
    samples = {"gradient.png": png_bytes(gradient), "checker.pgm": pnm_bytes(checker),
               "orange.ppm": pnm_bytes(np.ascontiguousarray(colour))}
    paths = []
    for name, data in samples.items():
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    return paths


# ------------------------------------------------------------------------------------ the client

def wait_for_model(session: requests.Session, url: str, image: bytes, timeout_s: float = 30.0) -> None:
    """Until the app's answers come from the model, not the default (the link takes up to a second)."""
    deadline = time.monotonic() + timeout_s
    body = {"input": base64.b64encode(image).decode()}
    while True:
        r = session.post(url, json=body, timeout=10)
        if r.status_code == 200 and not r.json()["default"]:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"the model did not answer within {timeout_s} s: {r.status_code} {r.text}")
        time.sleep(0.1)


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", nargs="*", type=Path, help="image files (default: generated samples)")
    ap.add_argument("--count", type=int, default=None,
                    help="requests to send, cycling through the images (default: each image once; 0: until Ctrl-C)")
    ap.add_argument("--interval", type=float, default=0.0, help="seconds between requests (default 0)")
    ap.add_argument("--free-ports", action="store_true", help="free ports instead of Clipper's 1337/1338/7000/6379")
    ap.add_argument("--cluster-name", default="image-query", help="the local cluster's name (default image-query)")
    ap.add_argument("--cluster-dir", default=None, help="where the cluster keeps its state and logs")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="clipper-images-") as tmp:
        paths = args.images or write_samples(Path(tmp))
        images = [(path.name, path.read_bytes()) for path in paths]  # read before starting anything
        count = len(images) if args.count is None else args.count
        ports = {}
        if args.free_ports:
            ports = {"clipper_query_port": None, "clipper_management_port": None, "clipper_rpc_port": None,
                     "redis_port": None}
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
        clipper_conn = ClipperConnection(LocalContainerManager(cluster_name=args.cluster_name,
                                                               cluster_dir=args.cluster_dir, **ports))
        failures = 0
        try:
            clipper_conn.start_clipper()
            python_deployer.create_endpoint(clipper_conn, APP, "bytes", image_stats,
                                            default_output='{"error": "no answer"}', slo_micros=1_000_000)
            url = f"http://{clipper_conn.get_query_addr()}/{APP}/predict"
            print(f"Serving {APP} at {url}", flush=True)
            with requests.Session() as session:
                wait_for_model(session, url, images[0][1])
                for sent, (name, data) in enumerate(itertools.cycle(images)):
                    if count > 0 and sent >= count:
                        break
                    body = json.dumps({"input": base64.b64encode(data).decode()})
                    start = time.perf_counter()
                    r = session.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=10)
                    latency_ms = (time.perf_counter() - start) * 1000.0
                    answer = r.json()
                    output = answer.get("output")
                    bad_image = isinstance(output, dict) and "error" in output
                    if r.status_code != 200 or answer.get("default") or bad_image:
                        failures += 1
                    print(f"{name} ({len(data)} bytes): {json.dumps(answer)}  {latency_ms:.3f} ms", flush=True)
                    if args.interval > 0:
                        time.sleep(args.interval)
        except KeyboardInterrupt:
            print("Interrupted", flush=True)
        finally:
            print("Stopping Clipper...", flush=True)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C does not cut the clean-up short
            clipper_conn.stop_all()
            print("Stopped", flush=True)
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
