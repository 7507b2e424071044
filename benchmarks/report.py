"""Regenerate the committed CNN-vs-GCN report from the committed records: results/report.md and its figures.

    python benchmarks/report.py [--results results] [--out results/report.md]

(`spikegcn report` does the same for a user's own records, by default in ./spikegcn-runs/.)
"""
from __future__ import annotations

import argparse
from pathlib import Path

from spikegcn.experiments.report import build_report

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=ROOT / "results", help="folder of the records")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "report.md", help="report file")
    args = ap.parse_args()
    print(f"report: {build_report(args.results, args.out)}")


if __name__ == "__main__":
    main()
