"""One table from several ``quality.py --json`` runs: per exemplar, the median over seeds.

A single seed can land in a bad basin (blotchy_0025 at 256x256, benchmarks/README.md), so a
recipe change is judged on several seeds. Run ``quality.py`` once per seed and label, then
combine; the reference implementation's outputs are scored once (taken from the first file):

    for s in 0 1 2; do
      python benchmarks/quality.py --size 256 --seeds 1 --first-seed $s --json out/sig$s.json
      python benchmarks/quality.py --size 256 --seeds 1 --first-seed $s --json out/gau$s.json \\
          --options '{"init": "gaussian"}'
    done
    python benchmarks/quality_table.py sigmoid=out/sig0.json,out/sig1.json,out/sig2.json \\
        gaussian=out/gau0.json,out/gau1.json,out/gau2.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from quality import DECIMALS, METRICS  # the columns quality.py writes, printed alike


def parse_run(text: str) -> tuple[str, list[Path]]:
    label, sep, files = text.partition("=")
    if not sep or not label or not files:
        raise argparse.ArgumentTypeError(f"expected LABEL=FILE[,FILE...], got {text!r}")
    return label, [Path(name) for name in files.split(",")]


def load_rows(files: list[Path]) -> list[dict]:
    rows = []
    for path in files:
        try:
            rows.extend(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as error:
            raise SystemExit(f"{path}: not a quality.py --json file ({error})") from None
    return rows


def fmt(metric: str, value: float) -> str:
    return f"{value:.{DECIMALS.get(metric, 3)}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=parse_run, metavar="LABEL=FILE[,FILE...]")
    args = parser.parse_args()

    synthesized: dict[str, dict[str, list[dict]]] = {}
    references: dict[str, dict] = {}
    for label, files in args.runs:
        for row in load_rows(files):
            if row["method"] == "reference":
                references.setdefault(row["texture"], row)
            else:
                synthesized.setdefault(label, {}).setdefault(row["texture"], []).append(row)
    textures = sorted({t for per_texture in synthesized.values() for t in per_texture} | set(references))

    header = f"| texture | method | seeds | {' | '.join(METRICS)} | worst swd |"
    print(header + "\n|" + "---|" * (header.count("|") - 1))
    everything: dict[str, list[dict]] = {}
    for texture in textures:
        if texture in references:
            values = " | ".join(fmt(m, references[texture][m]) for m in METRICS)
            print(f"| {texture} | reference | – | {values} | – |")
        for label, per_texture in synthesized.items():
            rows = per_texture.get(texture, [])
            if not rows:
                continue
            everything.setdefault(label, []).extend(rows)
            values = " | ".join(fmt(m, statistics.median(r[m] for r in rows)) for m in METRICS)
            worst = max(r["swd"] for r in rows)
            print(f"| {texture} | {label} | {len(rows)} | {values} | {worst:.3f} |")
    if references:
        values = " | ".join(fmt(m, statistics.median(r[m] for r in references.values())) for m in METRICS)
        print(f"| **median** | reference | – | {values} | – |")
    for label, rows in everything.items():
        values = " | ".join(fmt(m, statistics.median(r[m] for r in rows)) for m in METRICS)
        print(f"| **median** (all {len(rows)} runs) | {label} | – | {values} | {max(r['swd'] for r in rows):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
