"""Training Text GCN with the paper's settings (docs/textgcn.md, section 4), seeded."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..text.graph import TextGraph
from ..text.model import TextGCN, is_symmetric, sparse_identity, to_torch_csr


@dataclass
class TrainConfig:
    hidden: int = 200
    dropout: float = 0.5
    lr: float = 0.02
    weight_decay: float = 0.0
    epochs: int = 200
    early_stopping: int = 10
    seed: int = 0
    # The original Text GCN trains with TF1's Adam, which adds epsilon to sqrt(v_t) *before* the bias correction
    # ("epsilon hat"), i.e. torch's eps = 1e-8 / sqrt(1 - beta2^t): 30x larger at step 1. It matters for W0 (61k x 200
    # on 20NG), whose gradients are ~1e-7, about eps: with torch's constant eps W0 moves several times faster early
    # on. False gives torch's Adam (results/textgcn_table5_torchadam.*).
    tf_adam_eps: bool = True


def tf_adam_eps(beta2: float, step: int, eps: float = 1e-8) -> float:
    """torch Adam's ``eps`` that reproduces TF1's ``AdamOptimizer(epsilon=eps)`` at 1-based ``step``: TF1 adds eps to
    sqrt(v_t) before the bias correction, torch after it."""
    return eps / math.sqrt(1.0 - beta2 ** step)


def set_tf_adam_eps(opt: torch.optim.Adam, step: int, eps: float = 1e-8) -> None:
    """Make ``opt``'s next step (1-based ``step``) the update of TF1's ``AdamOptimizer(epsilon=eps)``."""
    for g in opt.param_groups:
        g["eps"] = tf_adam_eps(g["betas"][1], step, eps)


def setup_training(graph: TextGraph, cfg: TrainConfig):
    """Seed, then build the training inputs and the initialised model:
    ``(model, x, adj_t, labels, train_idx, val_idx)``."""
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    adj_t = to_torch_csr(graph.adj_norm)
    x = sparse_identity(graph.n_nodes)
    y = torch.from_numpy(graph.labels).long()
    tr, va = torch.from_numpy(graph.train_idx).long(), torch.from_numpy(graph.val_idx).long()
    return TextGCN(graph.n_nodes, graph.n_classes, cfg.hidden, cfg.dropout), x, adj_t, y, tr, va


def train_textgcn(graph: TextGraph, cfg: TrainConfig, progress: bool = True):
    """Train; returns ``(model, x, adj_t, history)``. Deterministic for a given ``cfg.seed``.

    Each epoch is one Adam step on the training loss (dropout on) followed by the validation loss of the updated
    model (dropout off), as the original. Dropout only acts after layer 1, so the updated model's layer-1 output
    serves both that validation pass and the next epoch's training pass: one 200-column spmm per epoch instead of
    two, with the same numbers.
    """
    if not is_symmetric(graph.adj_norm, rtol=1e-6):  # the layers' backward pass relies on it
        raise ValueError(f"{graph.name}: Text GCN's normalised adjacency is not symmetric; the graph is corrupted "
                         "(rebuild it with build_text_graph(..., cache=False))")
    model, x, adj_t, y, tr, va = setup_training(graph, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    val_losses: list[float] = []
    hist: list[dict] = []
    bar = tqdm(range(cfg.epochs), desc=f"train {graph.name}", disable=not progress, leave=False)
    model.train()
    h = model.layer1(x, adj_t)
    for epoch in bar:
        opt.zero_grad()
        out = model.layer2(h, adj_t)
        loss = F.cross_entropy(out[tr], y[tr])
        loss.backward()
        if cfg.tf_adam_eps:
            set_tf_adam_eps(opt, epoch + 1)
        opt.step()
        h = model.layer1(x, adj_t)  # the updated model's: validated now, trained on next epoch
        model.eval()
        with torch.no_grad():
            out = model.layer2(h, adj_t)
            vl = float(F.cross_entropy(out[va], y[va])) if va.numel() else 0.0
            va_acc = float((out[va].argmax(1) == y[va]).float().mean()) if va.numel() else float("nan")
        model.train()
        hist.append({"epoch": epoch + 1, "train_loss": loss.item(), "val_loss": vl, "val_acc": va_acc})
        bar.set_postfix(loss=f"{loss.item():.4f}", val_acc=f"{va_acc:.4f}")
        # stop when the validation loss exceeds the mean of the previous `early_stopping` ones (from epoch 12 on)
        if epoch + 1 > cfg.early_stopping + 1 and vl > np.mean(val_losses[-cfg.early_stopping:]):
            break
        val_losses.append(vl)
    return model.eval(), x, adj_t, hist
