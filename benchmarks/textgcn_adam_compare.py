"""Text GCN trained with TF1's Adam (the default, as the original) against torch's Adam: paired by seed.

Reads two Table V records of ``benchmarks/textgcn_table5.py`` (the default run and one with ``--torch-adam``; same
seeds, so each seed's graph split, initialisation and dropout draws are shared and only the optimiser differs) and
writes the per-dataset ANN and SNN means and the paired ANN difference with its standard error.

    python benchmarks/textgcn_adam_compare.py [--tf1 results/textgcn_table5] [--torch results/textgcn_table5_torchadam]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from textgcn_table5 import PAPER, adam_of, target_range

from spikegcn.fileio import write_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tf1", default="results/textgcn_table5")
    ap.add_argument("--torch", default="results/textgcn_table5_torchadam")
    ap.add_argument("--out", default="results/textgcn_adam_compare.md")
    args = ap.parse_args()
    recs = [json.loads(Path(p).with_suffix(".json").read_text()) for p in (args.tf1, args.torch)]
    for rec, p, tf in zip(recs, (args.tf1, args.torch), (True, False)):
        if adam_of(rec) != tf:
            raise SystemExit(f"{p}: its runs were not trained with {'TF1' if tf else 'torch'}'s Adam")
    tf1, tch = (rec["runs"] for rec in recs)
    args.tf1, args.torch = (str(Path(p).with_suffix("")) for p in (args.tf1, args.torch))
    lines = [f"Text GCN ANN accuracy with TF1's Adam (`{args.tf1}.json`) and torch's Adam (`{args.torch}.json`), "
             "paired by seed (same split, initialisation and dropout draws). Command: "
             "`python benchmarks/textgcn_adam_compare.py`.", "",
             "| dataset | seeds | ANN TF1 Adam | ANN torch Adam | paired diff (pp) | its std error | "
             "SNN TF1 Adam | target range (published mean ± 2 std) | TF1 in range | torch in range |",
             "|---|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for d in PAPER:
        keys = sorted(k for k in tf1 if tf1[k]["dataset"] == d and k in tch)
        if not keys:
            continue
        a, b = [tf1[k]["ann"] for k in keys], [tch[k]["ann"] for k in keys]
        diff = [x - y for x, y in zip(a, b)]
        se = statistics.stdev(diff) / math.sqrt(len(diff)) if len(diff) > 1 else float("nan")
        lo, hi = target_range(d)
        ma, mb = statistics.mean(a), statistics.mean(b)
        lines.append(f"| {d} | {len(keys)} | {ma:.2f} | {mb:.2f} | {statistics.mean(diff):+.2f} | {se:.2f} | "
                     f"{statistics.mean(tf1[k]['snn'] for k in keys):.2f} | [{lo:.2f}, {hi:.2f}] | "
                     f"{'yes' if lo <= ma <= hi else 'NO'} | {'yes' if lo <= mb <= hi else 'NO'} |")
    write_text(Path(args.out), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
