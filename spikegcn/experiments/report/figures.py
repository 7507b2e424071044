"""The report's figures (matplotlib, Agg backend), each written atomically and named after the paper's figure."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from ...fileio import savefig
from .records import Conversion

__all__ = ["plot_mape", "plot_loss_vs_q", "plot_tw", "plot_encoding", "plot_spikes"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
                         "figure.dpi": 110, "savefig.dpi": 130, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def _finish(plt, fig, path: str | Path, rect: tuple) -> None:
    """Lay the figure out inside ``rect`` (room for the legend and source line), write it atomically, free it."""
    fig.tight_layout(rect=rect)
    savefig(fig, path)
    plt.close(fig)


def plot_mape(mapes: Sequence[tuple[dict, str]], path: str | Path) -> Path:
    """Fig. 6: MAPE (%) vs Q, one line per T, the optimum marked. ``mapes``: ``(record, file name)`` pairs."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ymax = 0.0
    srcs = [name for _, name in mapes]
    curves = sorted(((int(T), rec, vals) for rec, _ in mapes for T, vals in rec["mape_percent"].items()),
                    key=lambda c: c[0])
    cmap = plt.get_cmap("viridis")
    for i, (T, rec, vals) in enumerate(curves):
        c = cmap(0.9 * i / max(1, len(curves) - 1)) if len(curves) > 2 else f"C{i}"
        opt = rec["optimum"][str(T)]
        ax.plot(rec["Q"], vals, color=c, lw=1.8, label=f"T = {T}: optimum Q = {opt['Q']:g} "
                                                      f"({opt['mape_percent']:.2f} %)")
        ax.plot([opt["Q"]], [opt["mape_percent"]], "o", color=c, ms=7, mec="black", zorder=5)
        ymax = max(ymax, 3.0 * opt["mape_percent"])
    ax.set_xlabel("coding base Q")
    ax.set_ylabel("MAPE of single-spike encoding (%)")
    ax.set_ylim(0, min(100.0, max(ymax, 20.0)))
    ax.set_title("Eq. 5: encoding error vs base (Gaussian activations, μ = 0, σ = 1)")
    ax.legend(loc="upper right", title="window length (● = optimum)")
    fig.text(0.01, 0.01, "source: " + ", ".join(srcs), fontsize=7, color="0.4")
    _finish(plt, fig, path, (0, 0.03, 1, 1))
    return Path(path)


def plot_loss_vs_q(series: list[dict], mape: dict[int, tuple], path: Path, title: str, source: str) -> Path:
    """Fig. 9: accuracy loss (pp, left axis) vs Q for each T, with the MAPE curve of that T (%, right axis).

    ``series``: dicts with ``label``, ``T``, ``Q`` (list), ``loss`` (list)."""
    plt = _plt()
    Ts = sorted({s["T"] for s in series})
    n = len(Ts)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labels = sorted({s["label"] for s in series}, key=lambda s: [x["label"] for x in series].index(s))
    handles = {}
    mape_handle = None
    for ax, T in zip(axes.flat, Ts):
        for s in series:
            if s["T"] != T:
                continue
            c = colors[labels.index(s["label"]) % len(colors)]
            order = np.argsort(s["Q"])
            (h,) = ax.plot(np.asarray(s["Q"])[order], np.asarray(s["loss"])[order], "o-", color=c, ms=4, lw=1.6)
            handles[s["label"]] = h
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_title(f"T = {T}")
        ax.set_xlabel("coding base Q")
        ax.set_ylabel("accuracy loss ANN − SNN (pp)")
        if T in mape:
            _, qs, vals, opt = mape[T]
            qmin, qmax = ax.get_xlim()
            sel = [(q, v) for q, v in zip(qs, vals) if qmin <= q <= qmax]
            ax2 = ax.twinx()
            ax2.grid(False)
            (mape_handle,) = ax2.plot([q for q, _ in sel], [v for _, v in sel], "--", color="0.35", lw=1.4)
            ax2.axvline(opt["Q"], color="0.35", ls=":", lw=1)
            ax2.set_ylabel("MAPE, Eq. 5 (%)", color="0.35")
            ax2.tick_params(axis="y", colors="0.35")
            ax2.set_ylim(0, None)
        else:
            ax.text(0.5, 0.97, f"no MAPE curve for T = {T}\n(spikegcn mape --T {T})", transform=ax.transAxes,
                    ha="center", va="top", fontsize=8, color="0.4")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    hs = list(handles.values()) + ([mape_handle] if mape_handle is not None else [])
    ls = [f"loss: {k}" for k in handles] + (["MAPE (Eq. 5), dotted line = its optimum"] if mape_handle else [])
    fig.legend(hs, ls, loc="lower center", bbox_to_anchor=(0.5, 0.02), ncol=min(3, len(hs)), frameon=False)
    fig.suptitle(title)
    fig.text(0.01, 0.005, f"source: {source}", fontsize=7, color="0.4")
    nrow_leg = math.ceil(len(hs) / 3)
    _finish(plt, fig, path, (0, 0.05 + 0.05 * nrow_leg / rows, 1, 0.97))
    return path


def plot_tw(series: list[dict], path: Path) -> Path:
    """Table VIII as a figure: SNN accuracy (%) vs wait time Tw, one panel per network, ANN dashed."""
    plt = _plt()
    n = len(series)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.5 * rows), squeeze=False)
    for ax, s in zip(axes.flat, series):
        tw = sorted(s["acc"])
        ax.plot(tw, [s["acc"][t] for t in tw], "o-", lw=1.8, ms=5, label="SNN (exact mode; Tw ≥ T functional)")
        ax.axhline(s["ann"], color="black", ls="--", lw=1.2, label=f"ANN {s['ann']:.2f} %")
        ax.axvline(s["T"], color="0.6", ls=":", lw=1, label=f"Tw = T = {s['T']}")
        vals = [s["acc"][t] for t in tw] + [s["ann"]]
        lo, hi = min(vals), max(vals)
        pad = max(0.5, (6.0 - (hi - lo)) / 2)  # at least 6 pp shown: a few test examples must not look like a trend
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlabel("wait time Tw (phases)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{s['label']}\nT = {s['T']}, Q = {s['Q']:g}", fontsize=10)
        ax.legend(loc="lower right", fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("SNN accuracy vs wait time Tw (exact phase-by-phase simulation for Tw < T)")
    fig.text(0.01, 0.005, "source: " + "; ".join(sorted({s["source"] for s in series})), fontsize=7, color="0.4")
    _finish(plt, fig, path, (0, 0.03, 1, 0.95))
    return path


def plot_encoding(values: Sequence[float], T: int, Q: float, title: str, source: str, path: Path) -> dict:
    """Fig. 7: encoded value vs true activation (log-log), with the threshold shift (round-off) and without it
    (floor). Activations that do not fire are drawn on the bottom line. Returns the sample's error statistics."""
    import torch

    from ...coding import PhaseCode, quantize

    plt = _plt()
    a = torch.tensor([v for v in values if v > 0], dtype=torch.float64)
    out = {}
    code = PhaseCode(T, Q)
    lo = min(float(a.min()), code.min_value) / 3
    zero_y = lo * 1.6
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.6), sharex=True, sharey=True)
    for ax, shift in zip(axes, (True, False)):
        c = PhaseCode(T, Q, shift=shift)
        q = quantize(a, c)
        fire = q > 0
        rel = (q - a) / a
        out[shift] = {"mape_percent": float(rel.abs().mean() * 100), "bias_percent": float(rel.mean() * 100),
                      "underflow_percent": float((~fire).double().mean() * 100),
                      "mape_firing_percent": float(rel[fire].abs().mean() * 100) if fire.any() else float("nan"),
                      "bias_firing_percent": float(rel[fire].mean() * 100) if fire.any() else float("nan")}
        color = "C0" if shift else "C3"
        ax.scatter(a[fire].numpy(), q[fire].numpy(), s=5, alpha=0.35, color=color, rasterized=True,
                   label=f"fires: encoded value ({int(fire.sum())})")
        ax.scatter(a[~fire].numpy(), np.full(int((~fire).sum()), zero_y), s=5, alpha=0.35, color="0.5",
                   marker="x", rasterized=True, label=f"no spike, â = 0 ({int((~fire).sum())})")
        ax.plot([lo, 1.2], [lo, 1.2], "k--", lw=1, label="ideal: encoded = true")
        ax.axvline(c.underflow_bound, color="0.4", ls=":", lw=1,
                   label=f"underflow bound {c.underflow_bound:.3g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, 1.2)
        ax.set_ylim(lo, 1.2)
        ax.set_title("with threshold shift (round-off, Eq. 4)" if shift else "without shift (floor, Eq. 3)")
        ax.set_xlabel("true normalised activation a = y / λ")
        o = out[shift]
        ax.text(0.03, 0.97, f"firing: mean |â − a| / a = {o['mape_firing_percent']:.1f} %,\n"
                            f"            mean (â − a) / a = {o['bias_firing_percent']:+.1f} %\n"
                            f"no spike: {o['underflow_percent']:.1f} % of the sample",
                transform=ax.transAxes, va="top", fontsize=9, bbox=dict(boxstyle="round", fc="white", ec="0.7"))
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8, frameon=False)
    axes[0].set_ylabel("encoded value â (× on the bottom line: â = 0)")
    fig.suptitle(f"{title}\nT = {T}, Q = {Q:g}: encoded vs true activation", fontsize=11)
    fig.text(0.01, 0.01, f"source: {source}", fontsize=7, color="0.4")
    _finish(plt, fig, path, (0, 0.03, 1, 1))
    return out


def plot_spikes(convs: list[Conversion], path: Path) -> Path:
    """Spikes per neuron of every spiking layer, one panel per network."""
    plt = _plt()
    n = len(convs)
    widths = [max(3.2, 0.32 * len(c.spikes) + 1.6) for c in convs]
    fig, axes = plt.subplots(1, n, figsize=(min(sum(widths) + 0.5, 18), 4.4), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    for ax, c in zip(axes.flat, convs):
        names = list(c.spikes)
        vals = [c.spikes[k] for k in names]
        color = "C1" if c.family == "GCN" else "C0"
        ax.bar(range(len(vals)), vals, color=color)
        ax.set_xticks(range(len(vals)))
        rot = len(names) > 4 or max(len(n) for n in names) > 8
        ax.set_xticklabels(names, rotation=55 if rot else 0, ha="right" if rot else "center",
                           fontsize=8 if len(names) > 8 else 9)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("spikes per neuron")
        ax.set_title(f"{c.label}\nT = {c.T}, Q = {c.Q:g}, Tw = {c.Tw}", fontsize=10)
    fig.suptitle("Spikes per neuron per layer (one-spike neurons: at most 1)")
    fig.text(0.01, 0.01, "source: " + "; ".join(c.source for c in convs), fontsize=7, color="0.4")
    _finish(plt, fig, path, (0, 0.04, 1, 0.95))
    return path
