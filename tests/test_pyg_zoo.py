"""The PyG zoo: every supported layer and model converts; functional = an independent quantised ANN, exact = the
per-phase prefix neuron; refusals name the layer; batches, subgraphs, float64 and the untouched user model."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.nn import (APPNP, ChebConv, GATConv, GATv2Conv, GCN2Conv, GCNConv, GINConv, GraphConv, GraphNorm,
                                SAGEConv, SGConv, SimpleConv, TAGConv, TransformerConv, global_add_pool,
                                global_max_pool, global_mean_pool)
from torch_geometric.nn.models import GCN, GIN, MLP, GraphSAGE
from torch_geometric.utils import subgraph

import spikegcn
from spikegcn import PhaseCode, UnsupportedModuleError
from spikegcn.coding import decode_binary, encode_binary, quantize

from conftest import sbm_graph

CODE = PhaseCode(16, 1.3)
D = torch.float64  # round-off far below the code's steps: a quantisation boundary is never crossed by accident


@pytest.fixture(scope="module")
def g():
    data = sbm_graph(seed=1, n=90, feats=8)
    data.x = data.x.to(D)
    return data


# ------------------------------------------------------------------ an independent quantised ANN
def q_input(x):
    lam = x.abs().max()
    bits, sign = encode_binary(x / lam, CODE.T, signed=True)
    return decode_binary(bits, CODE.T, sign, dtype=x.dtype) * lam


def q(y, lam, signed):
    return quantize(y / lam, CODE, signed=signed) * lam


def lam_of(y, signed):
    a = y.abs() if signed else y.clamp(min=0)
    m = a.reshape(-1, a.shape[-1]).amax(0)
    return torch.where(m > 0, m, torch.ones_like(m))


def reference(stages, x):
    """Run the ANN stage by stage twice: on the real values (for lambda) and on the quantised ones (the SNN's
    functional mode). ``stages``: ``(fn, kind)`` with kind ``"relu"``, ``"signed"`` or ``"output"``."""
    a, h = x, q_input(x)
    for fn, kind in stages:
        a, h = fn(a), fn(h)
        if kind == "relu":
            a, h = a.relu(), h.relu()
        if kind != "output":
            h = q(h, lam_of(a, kind == "signed"), kind == "signed")
    return h


def close(out, ref):
    assert out.dtype == ref.dtype
    err = (out - ref).abs().max() / ref.abs().max()
    assert err <= 1e-5, float(err)


class Two(nn.Module):
    """first -> ReLU -> second, each called with the graph."""

    def __init__(self, first, second):
        super().__init__()
        self.first, self.second = first, second

    def forward(self, x, edge_index):
        x = F.dropout(x, 0.5, self.training)  # PyG's examples drop input features
        return self.second(F.relu(self.first(x, edge_index)), edge_index)


class LinG(nn.Linear):
    def forward(self, x, edge_index=None):  # a Linear that ignores the graph (for Two)
        return super().forward(x)


ZOO = {
    "sage_mean": lambda: Two(SAGEConv(8, 16), SAGEConv(16, 4)),
    "sage_sum_noroot": lambda: Two(SAGEConv(8, 16, aggr="sum", root_weight=False), SAGEConv(16, 4, aggr="sum")),
    "sage_max": lambda: Two(SAGEConv(8, 16, aggr="max"), SAGEConv(16, 4, aggr="max")),
    "graphconv": lambda: Two(GraphConv(8, 16), GraphConv(16, 4, aggr="mean")),
    "sgconv": lambda: Two(SGConv(8, 16, K=2), SGConv(16, 4, K=1)),
    "chebconv": lambda: Two(ChebConv(8, 16, K=3), ChebConv(16, 4, K=2)),
    "tagconv": lambda: Two(TAGConv(8, 16, K=2), TAGConv(16, 4, K=3)),
    "simpleconv": lambda: Two(SimpleConv(aggr="mean", combine_root="sum"), LinG(8, 4)),
}


@pytest.mark.parametrize("name", list(ZOO))
def test_layer_functional_equals_quantised_ann(g, name):
    torch.manual_seed(0)
    model = ZOO[name]().to(D).eval()
    snn = spikegcn.convert(model, g, CODE, mode="functional")
    ei = g.edge_index
    ref = reference([(lambda h: model.first(h, ei), "relu"), (lambda h: model.second(h, ei), "output")], g.x)
    close(snn(g.x, ei), ref)
    exact = spikegcn.convert(model, g, CODE, mode="exact")
    assert torch.equal(exact(g.x, ei), snn(g.x, ei))  # Tw = T: exact is the closed form


class AppnpNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin1, self.lin2, self.prop, self.out = nn.Linear(8, 16), nn.Linear(16, 6), APPNP(K=3, alpha=0.2), \
            nn.Linear(6, 4)

    def forward(self, x, edge_index):
        h = self.lin2(F.relu(self.lin1(x)))
        return self.out(F.relu(self.prop(h, edge_index)))


class Gcn2Net(nn.Module):
    def __init__(self, shared=True):
        super().__init__()
        self.lin0 = nn.Linear(8, 16)
        self.convs = nn.ModuleList([GCN2Conv(16, alpha=0.1, theta=0.5, layer=i + 1, shared_weights=shared)
                                    for i in range(2)])
        self.out = nn.Linear(16, 4)

    def forward(self, x, edge_index):
        x = x0 = F.relu(self.lin0(x))
        for conv in self.convs:
            x = F.relu(conv(x, x0, edge_index))
        return self.out(x)


class GinNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = GINConv(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16)), train_eps=True)
        self.conv2 = GINConv(MLP([16, 16, 16], norm=None), eps=0.3)
        self.out = nn.Linear(16, 4)

    def forward(self, x, edge_index):
        return self.out(F.relu(self.conv2(F.relu(self.conv1(x, edge_index)), edge_index)))


def test_appnp_gcn2_gin_functional_equal_quantised_ann(g):
    torch.manual_seed(0)
    ei = g.edge_index
    m = AppnpNet().to(D).eval()
    ref = reference([(m.lin1, "relu"), (m.lin2, "signed"), (lambda h: m.prop(h, ei), "relu"), (m.out, "output")],
                    g.x)
    close(spikegcn.convert(m, g, CODE, mode="functional")(g.x, ei), ref)
    for shared in (True, False):
        m = Gcn2Net(shared).to(D).eval()
        ref = _gcn2_reference(m, g.x, ei)
        close(spikegcn.convert(m, g, CODE, mode="functional")(g.x, ei), ref)
    m = GinNet().to(D).eval()
    with torch.no_grad():
        m.conv1.eps.fill_(0.25)
    from spikegcn.convert.capture import gin_aggregate

    c1, c2 = m.conv1, m.conv2
    ref = reference([(lambda h: gin_aggregate(h, ei, c1.eps), "signed"), (c1.nn[0], "relu"), (c1.nn[2], "relu"),
                     (lambda h: gin_aggregate(h, ei, c2.eps), "signed"), (c2.nn.lins[0], "relu"), (c2.nn.lins[1], "relu"),
                     (m.out, "output")], g.x)
    close(spikegcn.convert(m, g, CODE, mode="functional")(g.x, ei), ref)


def _gcn2_reference(m, x, ei):
    a, h = m.lin0(x).relu(), m.lin0(q_input(x)).relu()
    h = q(h, lam_of(a, False), False)
    a0, h0 = a, h
    for conv in m.convs:
        a, h = conv(a, a0, ei).relu(), conv(h, h0, ei).relu()
        h = q(h, lam_of(a, False), False)
    return m.out(h)


# ------------------------------------------------------------------ exact mode at Tw < T
class Mid(nn.Module):
    """Linear -> ReLU -> a graph layer -> ReLU -> Linear: the graph layer gets one-spike input, spikes itself."""

    def __init__(self, mid, width=16):
        super().__init__()
        self.lin, self.mid, self.out = nn.Linear(8, width), mid, nn.Linear(width, 4)

    def forward(self, x, edge_index):
        return self.out(F.relu(self.mid(F.relu(self.lin(x)), edge_index)))


def brute_force_phases(inp, fn, lam, signed, code):
    """Output phase t sees the input prefix up to min(t + Tw, T_in): fire at the first t over threshold."""
    thr = code.thresholds(D)
    phase = fired = None
    for t in range(1, code.T + 1):
        k = min(t + code.Tw, inp.T_in)
        P = fn(inp.values_upto(k, D)) / lam
        mag = P.abs() if signed else P
        if phase is None:
            phase, fired = torch.zeros(P.shape, dtype=torch.long), torch.zeros(P.shape, dtype=torch.bool)
        now = (mag >= thr[t - 1]) & ~fired
        phase[now] = t
        fired |= now
    return phase


@pytest.mark.parametrize("case", ["cheb", "appnp", "sage_max_onespike", "sage_max_signed_binary"])
@pytest.mark.parametrize("tw", [0, 3])
def test_exact_small_wait_equals_prefix_reference(g, case, tw):
    torch.manual_seed(1)
    model, layer = {
        "cheb": lambda: (Mid(ChebConv(16, 16, K=3)), "mid"),
        "appnp": lambda: (AppnpNet(), "prop"),
        "sage_max_onespike": lambda: (Mid(SAGEConv(16, 16, aggr="max")), "mid"),
        "sage_max_signed_binary": lambda: (Two(SAGEConv(8, 16, aggr="max"), SAGEConv(16, 4)), "first"),
    }[case]()
    model = model.to(D).eval()
    code = PhaseCode(16, 1.3, Tw=tw)
    snn = spikegcn.convert(model, g, code, mode="exact")
    seen = {}
    getattr(snn, layer).register_forward_hook(lambda m, a, o: seen.update(inp=a[0], out=o, lam=m.scale))
    snn(g.x, g.edge_index)
    orig = getattr(model, layer)
    with torch.no_grad():
        ref = brute_force_phases(seen["inp"], lambda v: orig(v, g.edge_index), seen["lam"], False, code)
    assert torch.equal(seen["out"].phase.long(), ref)
    assert seen["out"].phase.count_nonzero() > 0
