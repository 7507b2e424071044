"""The PyG zoo: every supported layer and model converts; functional = an independent quantised ANN, exact = the
per-phase prefix neuron; refusals name the layer; batches, subgraphs, float64 and the untouched user model."""
import copy

import pytest
import torch
import torch.nn.functional as F
import torch_geometric.nn as pyg_nn
from conftest import sbm_graph
from torch import nn
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.nn import (
    APPNP,
    ChebConv,
    GATConv,
    GATv2Conv,
    GCN2Conv,
    GCNConv,
    GINConv,
    GraphConv,
    GraphNorm,
    SAGEConv,
    SGConv,
    SimpleConv,
    TAGConv,
    TransformerConv,
    global_add_pool,
    global_max_pool,
    global_mean_pool,
)
from torch_geometric.nn.models import GCN, GIN, MLP, GraphSAGE
from torch_geometric.utils import subgraph, to_torch_coo_tensor

import spikegcn
from spikegcn import PhaseCode, UnsupportedModuleError
from spikegcn.coding import decode_binary, encode_binary, quantize

CODE = PhaseCode(16, 1.3)
D = torch.float64  # round-off far below the code's steps: a quantisation boundary is never crossed by accident


@pytest.fixture(scope="module")
def g():
    data = sbm_graph(seed=1, n=90, feats=8)
    data.x = data.x.to(D)
    return data


# ------------------------------------------------------------------ an independent quantised ANN
def q_input(x):
    return _q_input_with(x, x)


def _q_input_with(x, calib_x):
    lam = calib_x.abs().max()
    bits, sign = encode_binary(x / lam, CODE.T, signed=True)
    return decode_binary(bits, CODE.T, sign, dtype=x.dtype) * lam


def q(y, lam, signed):
    return quantize(y / lam, CODE, signed=signed) * lam


def lam_of(y, signed):
    a = y.abs() if signed else y.clamp(min=0)
    m = a.reshape(-1, a.shape[-1]).amax(0)
    return torch.where(m > 0, m, torch.ones_like(m))


def reference(stages, x, calib=None):
    """Run the ANN stage by stage twice: on the real values (for lambda) and on the quantised ones (the SNN's
    functional mode). ``stages``: ``(fn, kind)`` with kind ``"relu"``, ``"signed"`` or ``"output"``.
    ``calib``: ``(calibration stages, calibration x)`` when lambda comes from another graph."""
    cal_stages, a = calib if calib is not None else (stages, x)
    h = q_input(x) if calib is None else _q_input_with(x, a)
    for (fn, kind), (cal_fn, _) in zip(stages, cal_stages):
        a, h = cal_fn(a), fn(h)
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
    "gin_sum_alone": lambda: Two(GINConv(nn.Identity(), eps=0.5), LinG(8, 4)),  # no Linear to fuse the sum with
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
    from spikegcn.conversion.capture import gin_aggregate

    c1, c2 = m.conv1, m.conv2
    # GIN's sum and the first Linear of its MLP are one layer (no non-linearity between them in the ANN)
    ref = reference([(lambda h: c1.nn[0](gin_aggregate(h, ei, c1.eps)), "relu"), (c1.nn[2], "relu"),
                     (lambda h: c2.nn.lins[0](gin_aggregate(h, ei, c2.eps)), "relu"), (c2.nn.lins[1], "relu"),
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


# ------------------------------------------------------------------ BasicGNN models, BatchNorm, JumpingKnowledge
def _trained_bn(model, g):
    """Give BatchNorm non-trivial running statistics, then eval."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(g.x, g.edge_index)
    return model.eval()


def _ref_basic_gnn(m, x, ei, conv_stages):
    """BasicGNN forward with quantised neurons: ``conv_stages(conv, norm)`` gives each layer's stages."""
    a, h = x, q_input(x)
    xs_a, xs_h = [], []
    for i, (conv, norm) in enumerate(zip(m.convs, m.norms)):
        last = i == m.num_layers - 1 and m.jk_mode is None
        for fn, kind in conv_stages(conv, norm, last):
            a, h = fn(a), fn(h)
            if kind == "relu":
                a, h = a.relu(), h.relu()
            if kind != "output":
                h = q(h, lam_of(a, kind == "signed"), kind == "signed")
        xs_a.append(a)
        xs_h.append(h)
    if m.jk_mode == "cat":
        a, h = torch.cat(xs_a, -1), torch.cat(xs_h, -1)
    elif m.jk_mode == "max":
        a, h = torch.stack(xs_a, -1).amax(-1), torch.stack(xs_h, -1).amax(-1)
        h = q(h, lam_of(a, True), True)  # the max join's neurons (signed: they feed the head directly)
    return m.lin(h) if m.jk_mode is not None else h


def _gcn_stages(ei, n):
    from torch_geometric.nn.conv.gcn_conv import gcn_norm

    ei_n, w = gcn_norm(ei, None, n, add_self_loops=True, dtype=D)

    def stages(conv, norm, last):
        agg = lambda h: norm(conv.propagate(ei_n, x=h, edge_weight=w) + conv.bias)  # noqa: E731
        return [(conv.lin, "signed"), (agg, "output" if last else "relu")]
    return stages


def test_basic_gnn_gcn_batchnorm_jk_equal_quantised_ann(g):
    torch.manual_seed(0)
    for jk in ("cat", "max", None):
        m = _trained_bn(GCN(8, 16, 3, 4, norm="batch_norm", jk=jk, dropout=0.5).to(D), g)
        ref = _ref_basic_gnn(m, g.x, g.edge_index, _gcn_stages(g.edge_index, g.num_nodes))
        close(spikegcn.convert(m, g, CODE, mode="functional")(g.x, g.edge_index), ref)


def test_basic_gnn_sage_gin_mlp_equal_quantised_ann(g):
    torch.manual_seed(0)
    ei = g.edge_index
    sage = GraphSAGE(8, 16, 2, 4, jk="last").to(D).eval()
    ref = _ref_basic_gnn(sage, g.x, ei, lambda conv, norm, last: [(lambda h: conv(h, ei), "relu")])
    close(spikegcn.convert(sage, g, CODE, mode="functional")(g.x, ei), ref)

    from spikegcn.conversion.capture import gin_aggregate

    gin = _trained_bn(GIN(8, 16, 2, 4, norm="batch_norm").to(D), g)

    def gin_stages(conv, norm, last):
        mlp = conv.nn
        return [(lambda h: mlp.norms[0](mlp.lins[0](gin_aggregate(h, ei, conv.eps))), "relu"),
                (lambda h: norm(mlp.lins[1](h)), "output" if last else "relu")]
    close(spikegcn.convert(gin, g, CODE, mode="functional")(g.x, ei), _ref_basic_gnn(gin, g.x, ei, gin_stages))

    mlp = MLP([8, 16, 16, 4], norm="batch_norm", dropout=0.2).to(D)
    mlp.train()
    with torch.no_grad():
        mlp(g.x)
    mlp.eval()
    ref = reference([(lambda h: mlp.norms[0](mlp.lins[0](h)), "relu"), (lambda h: mlp.norms[1](mlp.lins[1](h)), "relu"),
                     (mlp.lins[2], "output")], g.x)
    close(spikegcn.convert(mlp, (g.x,), CODE, mode="functional")(g.x), ref)


# ------------------------------------------------------------------ graph classification, batches, subgraphs
POOLS = {"add": global_add_pool, "mean": global_mean_pool, "max": global_max_pool}


class GraphCls(nn.Module):
    def __init__(self, pool):
        super().__init__()
        self.conv1, self.conv2, self.pool = SAGEConv(8, 16), SAGEConv(16, 16, aggr="max"), pool
        self.head = nn.Linear(16, 3)

    def forward(self, x, edge_index, batch):
        x = F.relu(self.conv1(x, edge_index))
        x = F.relu(self.conv2(x, edge_index))
        if self.pool == "add":  # called by name, as PyG's examples do (fx wraps the global)
            x = global_add_pool(x, batch)
        elif self.pool == "mean":
            x = global_mean_pool(x, batch)
        else:
            x = global_max_pool(x, batch)
        return self.head(x)


def _graphs(k=6):
    gen = torch.Generator().manual_seed(3)
    out = []
    for i in range(k):
        n = 8 + i
        ei = torch.randint(0, n, (2, 3 * n), generator=gen)
        out.append(Data(x=torch.randn(n, 8, generator=gen, dtype=D), edge_index=torch.cat([ei, ei.flip(0)], 1)))
    return out


@pytest.mark.parametrize("pool", ["add", "mean", "max"])
def test_graph_classification_batches(pool):
    torch.manual_seed(0)
    graphs = _graphs()
    model = GraphCls(pool).to(D).eval()
    loader = DataLoader(graphs, batch_size=4)
    snn = spikegcn.convert(model, loader, CODE, mode="functional")  # lambda = max over every batch
    full = next(iter(DataLoader(graphs, batch_size=len(graphs))))
    m = model
    # an add/mean pool fuses with the head Linear (one linear map, no neurons on the pooled sums); max is a gate
    head = lambda b: [(lambda h: POOLS[pool](h, b.batch), "signed"), (m.head, "output")] if pool == "max" else \
        [(lambda h: m.head(POOLS[pool](h, b.batch)), "output")]  # noqa: E731
    stages = lambda b: [(lambda h: m.conv1(h, b.edge_index), "relu"),  # noqa: E731
                        (lambda h: m.conv2(h, b.edge_index), "relu"), *head(b)]
    for b in loader:
        out = snn(b.x, b.edge_index, b.batch)
        close(out, reference(stages(b), b.x, calib=(stages(full), full.x)))
        for i, gi in enumerate(b.to_data_list()):  # a graph alone gives its row of the batch
            alone = snn(gi.x, gi.edge_index, torch.zeros(gi.num_nodes, dtype=torch.long))
            assert torch.allclose(alone[0], out[i], rtol=1e-9, atol=1e-12)
    # the torch.ao flow: prepare, any calibration loop, convert
    prepared = spikegcn.prepare(model, graphs[0])
    for b in loader:
        prepared(b.x, b.edge_index, b.batch)
    snn2 = spikegcn.convert(prepared, CODE, mode="functional")
    assert torch.equal(snn2(full.x, full.edge_index, full.batch), snn(full.x, full.edge_index, full.batch))


class PoolByAttribute(GraphCls):
    """The pool reached as a module attribute (``pyg_nn.global_mean_pool``) or stored on the model."""

    def __init__(self, stored=None):
        super().__init__(stored or "mean")

    def forward(self, x, edge_index, batch):
        x = F.relu(self.conv2(F.relu(self.conv1(x, edge_index)), edge_index))
        pool = self.pool if callable(self.pool) else pyg_nn.global_mean_pool
        return self.head(pool(x, batch))


@pytest.mark.parametrize("stored, pool", [(None, "mean"), (global_max_pool, "max"), (pyg_nn.global_add_pool, "add")])
def test_pool_called_as_attribute(stored, pool):
    torch.manual_seed(0)
    b = next(iter(DataLoader(_graphs(), batch_size=6)))
    m = PoolByAttribute(stored).to(D).eval()
    by_name = GraphCls(pool).to(D).eval()
    by_name.load_state_dict(m.state_dict())
    out = spikegcn.convert(m, b, CODE, mode="functional")(b.x, b.edge_index, b.batch)
    assert torch.equal(out, spikegcn.convert(by_name, b, CODE, mode="functional")(b.x, b.edge_index, b.batch))
    assert pyg_nn.global_mean_pool is global_mean_pool and m.pool is (stored or "mean")  # restored after tracing


def test_neighbour_sampling_arguments_are_refused(g):
    torch.manual_seed(0)
    m = GraphSAGE(8, 16, 2, 4).to(D).eval()
    nodes, edges = [g.num_nodes, 0, 0], [g.edge_index.shape[1], 0]
    match = r"num_sampled_nodes_per_hop \(neighbour-sampling trimming\) is not supported .* snn.inference"
    with pytest.raises(ValueError, match=match):
        spikegcn.convert(m, dict(x=g.x, edge_index=g.edge_index, num_sampled_nodes_per_hop=nodes), CODE)
    snn = spikegcn.convert(m, g, CODE, mode="functional")
    with pytest.raises(ValueError, match=match):
        snn(g.x, g.edge_index, num_sampled_nodes_per_hop=nodes, num_sampled_edges_per_hop=edges)
    with pytest.raises(ValueError, match=r"num_sampled_edges_per_hop \(neighbour"):
        snn(g.x, g.edge_index, None, None, None, None, None, edges)  # by position
    out = snn(g.x, g.edge_index)  # without them: the full (sub)graph
    assert torch.equal(snn.inference(g.x, g.edge_index), out)


def test_subgraph_and_new_graph_inductive(g):
    torch.manual_seed(0)
    model = Two(SAGEConv(8, 16), GraphConv(16, 4)).to(D).eval()
    snn = spikegcn.convert(model, g, CODE, mode="functional")
    subset = torch.arange(0, g.num_nodes, 2)
    sub_ei, _ = subgraph(subset, g.edge_index, relabel_nodes=True, num_nodes=g.num_nodes)
    xs = g.x[subset]
    st = lambda ei: [(lambda h: model.first(h, ei), "relu"), (lambda h: model.second(h, ei), "output")]  # noqa: E731
    close(snn(xs, sub_ei), reference(st(sub_ei), xs, calib=(st(g.edge_index), g.x)))
    adj_t = to_torch_coo_tensor(g.edge_index.flip(0), size=(g.num_nodes, g.num_nodes)).to(D)  # PyG's adj_t
    assert torch.allclose(snn(g.x, adj_t), snn(g.x, g.edge_index), rtol=1e-12, atol=1e-12)


def test_user_model_untouched_and_float64(g):
    torch.manual_seed(0)
    model = GCN(8, 16, 2, 4, norm="batch_norm").to(D)
    model.train()
    before = copy.deepcopy(model.state_dict())
    snn = spikegcn.convert(model, g, CODE)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    out = snn(g.x, g.edge_index)
    assert out.dtype == torch.float64
    moved = copy.deepcopy(snn).to(torch.float32)  # the SNN moves with .to(): buffers, weights, encoder
    out32 = moved(g.x.float(), g.edge_index)
    assert out32.dtype == torch.float32 and torch.allclose(out32, out.float(), atol=1e-4)
    snn32 = spikegcn.convert(model.float(), Data(x=g.x.float(), edge_index=g.edge_index), CODE)
    assert snn32(g.x.float(), g.edge_index).dtype == torch.float32


# ------------------------------------------------------------------ refusals name the layer, before PyG/fx fail
class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(16, 16)

    def forward(self, x):
        return self.lin(x) if x.sum() > 0 else x  # data-dependent control flow


class WithBlock(nn.Module):
    def __init__(self, block=None, act=None):
        super().__init__()
        self.conv = GCNConv(8, 16)
        self.block = block if block is not None else nn.Identity()
        self.act = act
        self.out = nn.Linear(16, 4)

    def forward(self, x, edge_index):
        h = self.block(F.relu(self.conv(x, edge_index)))
        return self.out(self.act(h) if self.act is not None else h)


class InputTanh(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = GCNConv(8, 4)

    def forward(self, x, edge_index):
        return self.conv(torch.tanh(x), edge_index)


class DoubleRelu(nn.Module):
    def __init__(self, double=True):
        super().__init__()
        self.conv, self.out, self.double_relu = GCNConv(8, 16), nn.Linear(16, 4), double

    def forward(self, x, edge_index):
        h = F.relu(self.conv(x, edge_index))
        return self.out(F.relu(h) if self.double_relu else h)


@pytest.mark.parametrize("model, match", [
    (lambda: Two(GATConv(8, 16), GCNConv(16, 4)), r"module first \(GATConv\): attention coefficients are a softmax"),
    (lambda: Two(GCNConv(8, 16), GATv2Conv(16, 4)), r"module second \(GATv2Conv\): attention"),
    (lambda: Two(TransformerConv(8, 16), GCNConv(16, 4)), r"module first \(TransformerConv\)"),
    (lambda: GCN(8, 16, 2, 4, norm="layer_norm"), r"module norms.0.module \(LayerNorm\)|module norms.0 \(LayerNorm\)"),
    (lambda: GCN(8, 16, 2, 4, norm="graph_norm"), r"module norms.0 \(GraphNorm\)"),
    (lambda: WithBlock(GraphNorm(16)), r"module block \(GraphNorm\)"),
    (lambda: GCN(8, 16, 2, 4, act="tanh"), r"module act \(Tanh\): only ReLU"),
    (lambda: WithBlock(act=nn.GELU()), r"module act \(GELU\)"),
    (lambda: InputTanh(), r"tanh on the input of module conv \(GCNConv\)"),
    (lambda: WithBlock(Branchy()), r"cannot trace module block \(Branchy\)"),
    (lambda: Two(SAGEConv(8, 16, project=True), SAGEConv(16, 4)), r"module first \(SAGEConv\): project=True"),
    (lambda: GraphSAGE(8, 16, 2, 4, jk="lstm"), r"module jk \(JumpingKnowledge\)"),
])
def test_refusals_name_the_layer(g, model, match):
    with pytest.raises(UnsupportedModuleError, match=match):
        spikegcn.convert(model().to(D), g, CODE)


def test_double_relu_converts_as_one(g):
    torch.manual_seed(0)
    m = DoubleRelu().to(D).eval()
    a = spikegcn.convert(m, g, CODE, mode="functional")(g.x, g.edge_index)
    m.double_relu = False
    assert torch.equal(a, spikegcn.convert(m, g, CODE, mode="functional")(g.x, g.edge_index))


def test_device_true_under_meta_default_device(g):
    # every tensor the layers create takes its device from the inputs or buffers
    torch.manual_seed(0)
    graphs = next(iter(DataLoader(_graphs(3), batch_size=3)))
    node = (g.x, g.edge_index)
    cases = [(ZOO["chebconv"](), g, node), (ZOO["sage_max"](), g, node), (AppnpNet(), g, node), (Gcn2Net(), g, node),
             (GinNet(), g, node), (GraphCls("mean"), graphs, (graphs.x, graphs.edge_index, graphs.batch))]
    for model, data, args in cases:
        snn = spikegcn.convert(model.to(D).eval(), data, PhaseCode(16, 1.3, Tw=2))
        ref = snn(*args)
        with torch.device("meta"):
            out = snn(*args)
        assert out.device.type == "cpu" and torch.equal(out, ref)


class Weighted(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = GraphConv(8, 16), ChebConv(16, 16, K=2), TAGConv(16, 4, K=2)

    def forward(self, x, edge_index, edge_weight):
        x = F.relu(self.a(x, edge_index, edge_weight))
        return self.c(F.relu(self.b(x, edge_index, edge_weight)), edge_index, edge_weight)


def test_edge_weights(g):
    torch.manual_seed(0)
    m = Weighted().to(D).eval()
    ew = torch.rand(g.edge_index.shape[1], dtype=D, generator=torch.Generator().manual_seed(0)) + 0.1
    data = Data(x=g.x, edge_index=g.edge_index, edge_weight=ew)
    snn = spikegcn.convert(m, data, CODE, mode="functional")
    ref = reference([(lambda h: m.a(h, g.edge_index, ew), "relu"), (lambda h: m.b(h, g.edge_index, ew), "relu"),
                     (lambda h: m.c(h, g.edge_index, ew), "output")], g.x)
    close(snn(g.x, g.edge_index, ew), ref)


# ------------------------------------------------------------------ featureless input: x=None or a sparse identity
class FeatAppnp(nn.Module):
    """APPNP after a Linear on X = I, or (``first=True``) on X = I itself."""

    def __init__(self, n, first=False):
        super().__init__()
        self.first = first
        self.lin, self.prop, self.out = nn.Linear(n, 8), APPNP(K=2, alpha=0.2), nn.Linear(n if first else 8, 4)

    def forward(self, x, edge_index):
        h = x if self.first else F.relu(self.lin(x))
        return self.out(F.relu(self.prop(h, edge_index)))


FN = 30  # nodes of the featureless graph = input channels of the first layer
FEATURELESS = {
    "gcn": lambda: Two(GCNConv(FN, 16), GCNConv(16, 4)),
    "sage_mean": lambda: Two(SAGEConv(FN, 16), SAGEConv(16, 4)),
    "sage_max": lambda: Two(SAGEConv(FN, 16, aggr="max"), LinG(16, 4)),
    "graphconv": lambda: Two(GraphConv(FN, 16), GraphConv(16, 4)),
    "gin": lambda: Two(GINConv(nn.Linear(FN, 16), eps=0.2), LinG(16, 4)),
    "sgconv": lambda: Two(SGConv(FN, 16, K=2), SGConv(16, 4)),
    "chebconv": lambda: Two(ChebConv(FN, 16, K=3), ChebConv(16, 4, K=2)),
    "tagconv": lambda: Two(TAGConv(FN, 16, K=2), TAGConv(16, 4)),
    "simpleconv": lambda: Two(SimpleConv(aggr="mean", combine_root="sum"), LinG(FN, 4)),
    "appnp_after_linear": lambda: FeatAppnp(FN),
}


def _sparse_eye(n):
    return torch.sparse_coo_tensor(torch.arange(n).repeat(2, 1), torch.ones(n, dtype=D), (n, n))


def _stages(m, ei):
    if isinstance(m, FeatAppnp):
        return [(m.lin, "relu"), (lambda h: m.prop(h, ei), "relu"), (m.out, "output")]
    if isinstance(m.first, GCNConv):  # two neuron layers each: X W^T (signed), then A-hat
        conv = _gcn_stages(ei, FN)
        return conv(m.first, nn.Identity(), False) + conv(m.second, nn.Identity(), True)
    if isinstance(m.first, GINConv):
        from spikegcn.conversion.capture import gin_aggregate

        first = lambda h: m.first.nn(gin_aggregate(h, ei, m.first.eps))  # noqa: E731
    else:
        first = lambda h: m.first(h, ei)  # noqa: E731
    return [(first, "relu"), (lambda h: m.second(h, ei), "output")]


@pytest.mark.parametrize("name", list(FEATURELESS))
def test_featureless_input_equals_quantised_ann(name):
    # X = I: node n sends one spike at phase 1 on its own channel; the ANN reference runs on torch.eye(N)
    torch.manual_seed(0)
    graph = sbm_graph(seed=2, n=FN, feats=4)
    ei = graph.edge_index
    m = FEATURELESS[name]().to(D).eval()
    ref = reference(_stages(m, ei), torch.eye(FN, dtype=D))
    inputs = [_sparse_eye(FN)] + ([] if name == "simpleconv" else [None])  # SimpleConv: N is not in the layer
    for x in inputs:
        snn = spikegcn.convert(m, (x, ei), CODE, mode="functional")
        close(snn(x, ei), ref)
        exact = spikegcn.convert(m, (x, ei), CODE, mode="exact")
        assert torch.equal(exact(x, ei), snn(x, ei))
    small_tw = spikegcn.convert(m, (inputs[-1], ei), PhaseCode(16, 1.3, Tw=3), mode="exact")
    assert small_tw(inputs[-1], ei).shape == ref.shape


class FeatGcn2(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.out = GCN2Conv(FN, alpha=0.1), nn.Linear(FN, 4)

    def forward(self, x, edge_index):
        return self.out(F.relu(self.conv(x, x, edge_index)))


@pytest.mark.parametrize("model, x, match", [
    (lambda: FeatAppnp(FN, first=True), None, r"module prop \(APPNP\) on featureless input .* x=torch.eye\(N\)"),
    (FeatGcn2, _sparse_eye(FN), r"module conv \(GCN2Conv\) on featureless input .* x=torch.eye\(N\)"),
    (lambda: Two(SimpleConv(), LinG(FN, 4)), None, r"featureless input x=None .* x=torch.eye\(N\)"),
])
def test_featureless_refusals_name_the_layer(model, x, match):
    graph = sbm_graph(seed=2, n=FN, feats=4)
    with pytest.raises(UnsupportedModuleError, match=match):
        spikegcn.convert(model().to(D), (x, graph.edge_index), CODE)


@pytest.mark.parametrize("pool", ["add", "mean"])
def test_pool_fuses_with_the_linear_after_it(pool):
    """An add/mean pool read only by a Linear is one layer with it: no neurons on the pooled sums."""
    torch.manual_seed(0)
    graphs = _graphs()
    model = GraphCls(pool).to(D).eval()
    full = next(iter(DataLoader(graphs, batch_size=len(graphs))))
    snn = spikegcn.convert(model, full, CODE, mode="functional")
    pools = [m for _, m in snn.spiking_layers() if type(m).__name__ == "SpikingGlobalPool"]
    assert len(pools) == 1 and pools[0].in_channels == 16 and pools[0].output == "potential"
    assert "fused Linear" in repr(pools[0]) and not hasattr(snn, "head")


LAZY = {  # in_channels=-1 (PyG's lazy initialisation), and the same layers with their sizes given
    "gcn": (lambda c: Two(GCNConv(c, 16), GCNConv(c if c == -1 else 16, 4))),
    "sage": (lambda c: Two(SAGEConv(c, 16), SAGEConv((c, c) if c == -1 else (16, 16), 4))),
    "graphconv": (lambda c: Two(GraphConv(c, 16), GraphConv(c if c == -1 else 16, 4))),
    "cheb": (lambda c: Two(ChebConv(c, 16, K=2), ChebConv(c if c == -1 else 16, 4, K=2))),
    "sg": (lambda c: Two(SGConv(c, 16, K=2), SGConv(c if c == -1 else 16, 4, K=1))),
    "basic_sage": (lambda c: GraphSAGE(c, 16, 2, 4)),
}


@pytest.mark.parametrize("name", list(LAZY))
def test_lazy_in_channels_convert_as_sized(g, name):
    """A model built with in_channels=-1 and run once converts to the same SNN as the model with sizes given."""
    torch.manual_seed(0)
    lazy = LAZY[name](-1).to(D)
    lazy(g.x, g.edge_index)  # initialises the lazy weights
    lazy.eval()
    sized = LAZY[name](8).to(D).eval()
    sized.load_state_dict(lazy.state_dict())
    a = spikegcn.convert(lazy, g, CODE, mode="functional")(g.x, g.edge_index)
    b = spikegcn.convert(sized, g, CODE, mode="functional")(g.x, g.edge_index)
    assert torch.equal(a, b)
    assert lazy.first.in_channels == -1 if hasattr(lazy, "first") else True  # the user's model is not touched


def test_bipartite_sizes_are_refused_by_name(g):
    model = Two(SAGEConv(8, 16), SAGEConv((16, 8), 4)).to(D).eval()
    with pytest.raises(UnsupportedModuleError, match=r"second \(SAGEConv\): bipartite"):
        spikegcn.convert(model, g, CODE)
