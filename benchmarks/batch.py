"""Throughput of ``texsynth batch`` (textures per hour) for 1, 2, … processes.

Each configuration runs ``texsynth batch`` from scratch into its own folder, one after the
other (never two at once: PyTorch processes competing for the same cores slow each other
down far more than they gain). Wall time includes starting the processes.

    python benchmarks/batch.py                                  # CPU, 1 and 2 processes
    python benchmarks/batch.py --accelerator gpu --devices 1,2  # per GPU, on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_TEXTURES = HERE.parent.parent / "shared" / "textures"


def run_batch(textures: Path, out: Path, devices: int, args: argparse.Namespace) -> dict:
    command = [sys.executable, "-m", "texsynth", "batch", str(textures), str(out), "--size", str(args.size),
               "--steps", str(args.steps), "--accelerator", args.accelerator, "--devices", str(devices),
               "--seed", "0", "--json", "--no-progress", *args.extra]
    start = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    seconds = time.perf_counter() - start
    if finished.returncode not in (0, 1):
        raise SystemExit(f"texsynth batch failed ({finished.returncode}):\n{finished.stderr[-2000:]}")
    summary = json.loads(finished.stdout.strip().splitlines()[-1])
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    evals = sum(r["evals"] for r in records)
    return {"devices": devices, "items": summary["done"], "seconds": seconds,
            "per_hour": summary["done"] / seconds * 3600, "evals": evals,
            "item_seconds": sum(r["seconds"] for r in records)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--textures", type=Path, default=DEFAULT_TEXTURES)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--devices", default="1,2", help="comma-separated process counts to compare")
    parser.add_argument("extra", nargs="*", help="more `texsynth batch` options, after --")
    args = parser.parse_args()
    if not args.textures.is_dir():
        print(f"no exemplar folder {args.textures}", file=sys.stderr)
        return 2
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{args.accelerator}; {args.size}x{args.size}, {args.steps} steps; exemplars: {args.textures}")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for devices in (int(n) for n in args.devices.split(",")):
            rows.append(run_batch(args.textures, Path(scratch) / f"out{devices}", devices, args))
    print(f"{'processes':>9} {'items':>5} {'wall s':>7} {'textures/h':>10} {'evals':>6} {'speed-up':>8}")
    for row in rows:
        print(f"{row['devices']:>9} {row['items']:>5} {row['seconds']:>7.1f} {row['per_hour']:>10.0f} "
              f"{row['evals']:>6} {row['per_hour'] / rows[0]['per_hour']:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
