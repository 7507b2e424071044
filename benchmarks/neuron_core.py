"""Time the neuron core on 10 million neurons at T = 16, as a ratio to one torch.relu plus one pass.

The baseline is what an ANN does with the same pre-activations: ``torch.relu(x)`` plus one matrix-free
elementwise pass (the per-channel normalisation ``x * (1/lambda)``). Ratios are taken within one run.

    python benchmarks/neuron_core.py [--n 10000000] [--T 16] [--threads 2]

Writes results/neuron_core.json and results/neuron_core.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import date
from pathlib import Path

import torch

from spikegcn import PhaseCode
from spikegcn.coding import decode, encode
from spikegcn.fileio import write_json, write_text
from spikegcn.neuron import one_spike_fire


def best_of(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--T", type=int, default=16)
    ap.add_argument("--Q", type=float, default=1.3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default="results/neuron_core")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, generator=g) * 0.3
    inv_lam = 1.0 / 1.7
    code = PhaseCode(args.T, args.Q)

    base = best_of(lambda: torch.relu(x).mul_(inv_lam), args.repeat)
    rows = []

    def add(name, fn, note):
        t = best_of(fn, args.repeat)
        rows.append({"op": name, "seconds": t, "ratio": t / base, "note": note})

    add("encode (fire phases, Tw >= T)", lambda: encode(x, code),
        "closed form: thresholds searched per neuron, int8 phases")
    phase, _ = encode(x, code)
    add("decode (phases -> values)", lambda: decode(phase, code), "table lookup")
    add("quantize (encode + decode)", lambda: decode(encode(x, code)[0], code), "what a functional layer does")
    add("encode signed", lambda: encode(x, code, signed=True), "signed one-spike neurons (A14)")
    # exact neuron with Tw < T: the pre-activation arrives spread over T input phases (split in T parts)
    parts = x / args.T
    add(
        f"exact neuron, Tw = 4, {args.T} input phases",
        lambda: one_spike_fire(lambda p: parts, code.replace(Tw=4), T_in=args.T),
        "streaming over phases: one float state + int8 phases; T compares",
    )
    rec = {
        "benchmark": "neuron_core",
        "n_neurons": args.n,
        "T": args.T,
        "Q": args.Q,
        "threads": args.threads,
        "baseline": "torch.relu(x) + one elementwise pass (x * 1/lambda)",
        "baseline_seconds": base,
        "rows": rows,
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores".strip(),
        "torch": torch.__version__,
        "date": date.today().isoformat(),
        "command": f"python benchmarks/neuron_core.py --n {args.n} --T {args.T} --threads {args.threads}",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.with_suffix(".json"), rec, indent=2)
    lines = [
        f"Neuron core on {args.n:,} neurons, T = {args.T}, Q = {args.Q}, {args.threads} threads "
        f"({rec['machine']}, torch {torch.__version__}, {rec['date']}).",
        f"Baseline: {rec['baseline']} = {base * 1e3:.1f} ms.",
        "",
        "| operation | ms | ratio to baseline |",
        "|---|---:|---:|",
    ]
    lines += [f"| {r['op']} | {r['seconds'] * 1e3:.1f} | {r['ratio']:.2f}x |" for r in rows]
    write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
