import json
import os
from pathlib import Path

import pytest
import torch

from spikegcn.cli import main
from spikegcn.text.pipeline import run_textgcn, summary_table, write_record


def test_demo_end_to_end(tmp_path):
    rec = run_textgcn("demo", seed=0, progress=False)
    assert rec["dataset"] == "demo" and rec["graph"]["docs"] == 400
    assert rec["ann_accuracy"] > 85
    for mode in ("functional", "exact"):
        r = rec["snn"][mode]
        assert r["loss_points"] <= 1.0
        assert 0 < r["spikes_per_neuron"]["conv1.agg"] <= 1
        assert r["energy_fp32"]["ratio"] > 1 and r["energy_int8"] == pytest.approx(1.5 * r["energy_fp32"]["ratio"], rel=1e-3)
    assert rec["snn"]["functional"]["accuracy"] == rec["snn"]["exact"]["accuracy"]  # Tw = T
    assert abs(rec["sign_variants"]["agg_first"]["loss_points"]) <= 1.0  # exact order, no signed spikes
    path = write_record(rec, tmp_path)
    assert json.loads(path.read_text())["seed"] == 0
    assert "SNN exact" in summary_table(rec)


def test_demo_is_deterministic():
    a = run_textgcn("demo", seed=3, progress=False, modes=("functional",), variants=())
    b = run_textgcn("demo", seed=3, progress=False, modes=("functional",), variants=())
    assert a["ann_accuracy"] == b["ann_accuracy"]
    assert a["snn"]["functional"]["accuracy"] == b["snn"]["functional"]["accuracy"]
    assert a["snn"]["functional"]["spikes_per_neuron"] == b["snn"]["functional"]["spikes_per_neuron"]


def test_cli_demo_and_errors(tmp_path, capsys):
    assert main(["textgcn", "--dataset", "demo", "--quiet", "--out", str(tmp_path), "--Tw", "4"]) == 0
    out = capsys.readouterr().out
    assert "Tw = 4" in out and "record:" in out
    assert len(list(tmp_path.glob("demo_T16_Q1.3_Tw4_seed0.json"))) == 1
    with pytest.raises(SystemExit, match="Q must be a finite real number > 1"):
        main(["textgcn", "--dataset", "demo", "--quiet", "--Q", "0.9", "--out", str(tmp_path)])
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: demo\nlr: 3\n")
    with pytest.raises(SystemExit, match="unknown keys"):
        main(["textgcn", "--config", str(bad), "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="not found"):
        main(["textgcn", "--config", str(tmp_path / "nope.yaml")])


needs_data = pytest.mark.skipif(
    not (os.environ.get("SPIKEGCN_DATA") and (Path(os.environ["SPIKEGCN_DATA"]) / "textgcn/data/R8.txt").is_file()),
    reason="Text GCN corpora not found under SPIKEGCN_DATA",
)


@needs_data
def test_r8_converted_within_one_point():
    torch.set_num_threads(2)
    rec = run_textgcn("R8", seed=0, progress=False, modes=("functional",), variants=())
    assert rec["ann_accuracy"] > 96.0
    assert rec["snn"]["functional"]["loss_points"] <= 1.0


def test_tf_adam_eps_reproduces_tf1_update():
    # TF1: lr_t = lr sqrt(1 - b2^t) / (1 - b1^t); p -= lr_t m / (sqrt(v) + eps)  (eps before bias correction)
    import math

    import torch

    from spikegcn.text.train import tf_adam_eps

    lr, b1, b2, eps = 0.02, 0.9, 0.999, 1e-8
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(50, dtype=torch.float64))
    ref = p.detach().clone()
    opt = torch.optim.Adam([p], lr=lr, betas=(b1, b2), eps=eps)
    m = torch.zeros_like(ref)
    v = torch.zeros_like(ref)
    for t in range(1, 6):
        g = torch.randn(50, dtype=torch.float64) * 1e-7  # gradients of W0's size: eps matters
        p.grad = g.clone()
        for group in opt.param_groups:
            group["eps"] = tf_adam_eps(b2, t, eps)
        opt.step()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        ref -= lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (v.sqrt() + eps)
        torch.testing.assert_close(p.detach(), ref, rtol=1e-12, atol=1e-15)
