import json
import os
from pathlib import Path

import pytest
import torch

from spikegcn.cli import main
from spikegcn.experiments.textgcn import run_textgcn, summary_table, write_record


def test_demo_end_to_end(tmp_path):
    rec = run_textgcn("demo", seed=0, progress=False)
    assert rec["dataset"] == "demo" and rec["graph"]["docs"] == 400
    assert rec["ann_accuracy"] > 85
    for mode in ("functional", "exact"):
        r = rec["snn"][mode]
        assert r["loss_points"] <= 1.0
        assert 0 < r["spikes_per_neuron"]["conv1.agg"] <= 1
        assert r["energy_fp32"]["ratio"] > 1
        assert r["energy_int8"] == pytest.approx(1.5 * r["energy_fp32"]["ratio"], rel=1e-3)
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
    # user errors: one line on stderr and exit code 2, before any work
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: demo\nlr: 3\n")
    for argv, msg in ((["--dataset", "demo", "--quiet", "--Q", "0.9", "--out", str(tmp_path)], "--Q: must be > 1"),
                      (["--config", str(bad), "--out", str(tmp_path)], "unknown key"),
                      (["--config", str(tmp_path / "nope.yaml")], "not found")):
        try:  # argparse exits, later checks return the code
            code = main(["textgcn", *argv])
        except SystemExit as exc:
            code = exc.code
        assert code == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, err


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

    from spikegcn.experiments.textgcn_train import set_tf_adam_eps

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
        set_tf_adam_eps(opt, t, eps)
        opt.step()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        ref -= lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (v.sqrt() + eps)
        torch.testing.assert_close(p.detach(), ref, rtol=1e-12, atol=1e-15)


def _random_symmetric_csr(n: int, density: float, seed: int):
    import numpy as np
    import scipy.sparse as sp

    a = sp.random(n, n, density=density, random_state=seed, format="csr", dtype=np.float64)
    a = (a + a.T + sp.identity(n)).tocsr()
    a.sort_indices()
    return a


def test_symmetric_gcnconv_matches_gcnconv():
    from torch_geometric.nn import GCNConv

    from spikegcn.text.model import SymmetricGCNConv, to_torch_csr

    adj = to_torch_csr(_random_symmetric_csr(60, 0.1, 0))
    torch.manual_seed(0)
    ref = GCNConv(12, 7, bias=False, normalize=False)
    sym = SymmetricGCNConv(12, 7, bias=False, normalize=False)
    sym.load_state_dict(ref.state_dict())
    x0 = torch.randn(60, 12)
    grads = []
    for conv in (ref, sym):
        x = x0.clone().requires_grad_()
        out = conv(x, adj)
        assert (type(out.grad_fn).__name__ == "_SymmetricSpMMBackward") == (conv is sym)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads.append((out.detach(), x.grad, conv.lin.weight.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert "SymmetricGCNConv(12, 7)" in repr(sym)


def test_is_symmetric():
    import numpy as np
    import scipy.sparse as sp

    from spikegcn.text.model import is_symmetric

    a = _random_symmetric_csr(30, 0.2, 1)
    assert is_symmetric(a)
    b = a.tocoo(copy=True)  # tocoo shares the data array by default
    k = int(np.flatnonzero(b.row != b.col)[0])
    b.data[k] *= 1 + 1e-7
    b = b.tocsr()
    assert not is_symmetric(b) and is_symmetric(b, rtol=1e-6)
    small = sp.csr_matrix(np.array([[10.0, 1e-6], [2e-6, 1.0]]))  # the tolerance is per entry, not absolute
    assert not is_symmetric(small, rtol=1e-6)
    z = a.tocoo()
    extra = sp.coo_matrix((np.r_[z.data, 0.0], (np.r_[z.row, 0], np.r_[z.col, 29])), shape=a.shape).tocsr()
    if a[0, 29] == 0 and a[29, 0] == 0:
        assert is_symmetric(extra)  # a stored zero is not an entry
    c = a.tolil()
    c[0, 29] = 0.5 + c[0, 29]  # a structural or value change on one side only
    c[29, 0] = 0.0
    assert not is_symmetric(sp.csr_matrix(c), rtol=1e-6)
    assert not is_symmetric(sp.csr_matrix((3, 4)))


@pytest.mark.parametrize("tf_adam", [True, False])
def test_training_reuses_layer1_with_the_same_numbers(tf_adam):
    """train_textgcn (SymmetricGCNConv, each epoch's layer-1 output shared by validation and the next step) gives
    the history and weights of the plain loop with PyG's GCNConv (benchmarks/textgcn_train_speed.py) bit for bit."""
    import importlib.util

    from spikegcn.experiments.textgcn_train import TrainConfig, train_textgcn
    from spikegcn.text.graph import build_text_graph

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "textgcn_train_speed.py"
    spec = importlib.util.spec_from_file_location("textgcn_train_speed", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    g = build_text_graph("demo", seed=1, progress=False)
    cfg = TrainConfig(seed=1, epochs=30, early_stopping=30, tf_adam_eps=tf_adam)
    model, _, _, hist = train_textgcn(g, cfg, progress=False)
    ref, ref_hist = bench.plain_loop(g, cfg)
    assert [(h["train_loss"], h["val_loss"]) for h in hist] == ref_hist
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p, q)


def test_training_rejects_an_asymmetric_graph():
    import dataclasses

    from spikegcn.experiments.textgcn_train import TrainConfig, train_textgcn
    from spikegcn.text.graph import build_text_graph

    g = build_text_graph("demo", seed=0, progress=False)
    adj = g.adj_norm.tolil()
    adj[0, 1] = 0.5  # demo doc 0 and doc 1 are not linked: one direction only
    bad = dataclasses.replace(g, adj_norm=adj.tocsr())
    with pytest.raises(ValueError, match="not symmetric"):
        train_textgcn(bad, TrainConfig(epochs=1), progress=False)


def test_symmetric_gcnconv_keeps_learnable_edge_weights():
    """An adjacency whose values require a gradient takes GCNConv's own path, so they get their gradient."""
    from spikegcn.text.model import SymmetricGCNConv, to_torch_csr

    adj = to_torch_csr(_random_symmetric_csr(20, 0.2, 2))
    vals = adj.values().clone().requires_grad_()
    adj = torch.sparse_csr_tensor(adj.crow_indices(), adj.col_indices(), vals, adj.shape)
    conv = SymmetricGCNConv(4, 3, bias=False, normalize=False)
    conv(torch.randn(20, 4), adj).sum().backward()
    assert vals.grad is not None and vals.grad.abs().sum() > 0
