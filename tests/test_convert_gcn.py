import pytest
import torch
import torch.nn.functional as F
from conftest import accuracy
from torch import nn
from torch_geometric.nn import GCNConv

from spikegcn import PhaseCode, UnsupportedModuleError, convert
from spikegcn.energy import INT8


@pytest.mark.parametrize("mode", ["functional", "exact"])
def test_accuracy_loss_under_one_point(sbm, mode):
    data, model = sbm
    ann = accuracy(model(data.x, data.edge_index), data)
    assert ann > 0.9
    snn = convert(model, data, PhaseCode(T=16, Q=1.3), mode=mode)
    acc = accuracy(snn(data.x, data.edge_index), data)
    assert ann - acc < 0.01, (ann, acc)


def test_exact_equals_functional_at_full_wait(sbm):
    data, model = sbm
    f = convert(model, data, mode="functional")
    e = convert(model, data, mode="exact")
    assert torch.equal(f(data.x, data.edge_index), e(data.x, data.edge_index))


def test_exact_small_tw_not_better_than_functional(sbm):
    data, model = sbm
    func = accuracy(convert(model, data, mode="functional")(data.x, data.edge_index), data)
    accs = {}
    for tw in (0, 1, 2):
        snn = convert(model, data, PhaseCode(16, 1.3, Tw=tw), mode="exact")
        accs[tw] = accuracy(snn(data.x, data.edge_index), data)
        assert accs[tw] <= func
    assert accs[0] < func  # noise spikes cost accuracy when nothing is waited for


def test_functional_equals_quantised_ann_reference(sbm):
    # the converted model in functional mode is exactly the round-off quantised ANN
    from torch_geometric.nn.conv.gcn_conv import gcn_norm

    from spikegcn.coding import quantize
    from spikegcn.conversion import activation_scale
    from spikegcn.nn.aggregation import build_graph_op

    data, model = sbm
    code = PhaseCode(16, 1.3)
    snn = convert(model, data, code, mode="functional")
    out = snn(data.x, data.edge_index)
    n = data.num_nodes
    ei, w = gcn_norm(data.edge_index, None, n, add_self_loops=True)
    A = build_graph_op(ei, w, n).adj
    lam0 = data.x.abs().max()
    x = torch.floor((data.x.abs() / lam0).double() * 2**16).clamp(max=2**16 - 1).float() / 2**16 * lam0 * data.x.sign()
    h = x
    c1, c2 = model.conv1, model.conv2
    lam_mp1 = activation_scale(c1.lin(data.x), signed=True)
    m = quantize(c1.lin(h) / lam_mp1, code, signed=True) * lam_mp1
    lam1 = activation_scale(c1(data.x, data.edge_index), signed=False)
    h = quantize((torch.sparse.mm(A, m) + c1.bias) / lam1, code) * lam1
    ann_h = torch.relu(c1(data.x, data.edge_index))
    lam_mp2 = activation_scale(c2.lin(ann_h), signed=True)
    m = quantize(c2.lin(h) / lam_mp2, code, signed=True) * lam_mp2
    ref = torch.sparse.mm(A, m) + c2.bias
    assert torch.allclose(out, ref, atol=1e-5)
    assert (out.argmax(1) == ref.argmax(1)).all()


def test_sign_handling_variants_reported(sbm):
    data, model = sbm
    ann = accuracy(model(data.x, data.edge_index), data)
    res = {v: accuracy(convert(model, data, variant=v)(data.x, data.edge_index), data)
           for v in ("signed", "agg_first", "relu_mp")}
    assert ann - res["signed"] < 0.01
    assert ann - res["agg_first"] < 0.02  # aggregation first is exact up to quantisation too
    assert res["relu_mp"] < res["signed"]  # the premature ReLU loses information


def test_stats_and_energy(sbm):
    data, model = sbm
    snn = convert(model, data)
    snn(data.x, data.edge_index)
    stats = snn.layer_stats()
    assert [s.name for s in stats] == ["conv1.mp", "conv1.agg", "conv2.mp", "conv2.agg"]
    for s in stats[1:]:
        assert s.s <= 1.0  # one spike at most per hidden neuron
    assert stats[0].s > 1.0  # binary multi-spike input
    rep = snn.energy()
    assert rep["ratio"] > 0 and rep["macs"] == sum(s.macs for s in stats)
    assert snn.energy(INT8)["ratio"] == pytest.approx(rep["ratio"] * 1.5, rel=1e-3)


def test_percentile_and_layerwise_calibration(sbm):
    data, model = sbm
    for kw in (dict(percentile=99.9), dict(channel_wise=False)):
        snn = convert(model, data, **kw)
        acc = accuracy(snn(data.x, data.edge_index), data)
        assert acc > 0.85, kw
    with pytest.raises(ValueError, match="percentile must be in"):
        convert(model, data, percentile=0)


def test_deterministic(sbm):
    data, model = sbm
    a = convert(model, data, PhaseCode(16, 1.3, Tw=4))(data.x, data.edge_index)
    b = convert(model, data, PhaseCode(16, 1.3, Tw=4))(data.x, data.edge_index)
    assert torch.equal(a, b)


class WithGELU(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = GCNConv(16, 8)
        self.act = nn.GELU()
        self.conv2 = GCNConv(8, 4)

    def forward(self, x, edge_index):
        return self.conv2(self.act(self.conv1(x, edge_index)), edge_index)


class WithElu(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = GCNConv(16, 8)
        self.conv2 = GCNConv(8, 4)

    def forward(self, x, edge_index):
        return self.conv2(F.elu(self.conv1(x, edge_index)), edge_index)


def test_unsupported_modules_are_named(sbm):
    data, _ = sbm
    with pytest.raises(UnsupportedModuleError, match=r"module act \(GELU\)"):
        convert(WithGELU(), data)
    with pytest.raises(UnsupportedModuleError, match="elu"):
        convert(WithElu(), data)
    with pytest.raises(UnsupportedModuleError, match="no GCNConv or Linear"):
        convert(nn.Sequential(nn.ReLU()), (data.x,))
    with pytest.raises(ValueError, match="mode must be"):
        convert(WithGELU(), data, mode="fast")


class MLPHead(nn.Module):
    """GCN followed by a Linear classifier, ReLU as a module: Linear + ReLU modules are converted too."""

    def __init__(self):
        super().__init__()
        self.conv = GCNConv(16, 32)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(32, 4)

    def forward(self, x, edge_index):
        return self.fc(self.relu(self.conv(x, edge_index)))


def test_linear_head_and_relu_module(sbm):
    data, _ = sbm
    torch.manual_seed(0)
    m = MLPHead()
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(m(data.x, data.edge_index)[data.train_mask], data.y[data.train_mask]).backward()
        opt.step()
    m.eval()
    ann = accuracy(m(data.x, data.edge_index), data)
    snn = convert(m, data)
    assert ann - accuracy(snn(data.x, data.edge_index), data) < 0.015
    assert [s.name for s in snn.layer_stats()] == ["conv.mp", "conv.agg", "fc"]


def test_set_code_equals_converting_with_that_code():
    """One set_code for graph and CNN models: the neuron layers and the input encoder (its T) take the new code,
    which equals converting with it (lambda does not depend on the code)."""
    from torch_geometric.nn import GCN

    torch.manual_seed(0)
    n = 30
    x, edge_index = torch.rand(n, 6), torch.randint(0, n, (2, 90))
    model = GCN(6, 8, 2, 3).eval()
    snn = convert(model, (x, edge_index), PhaseCode(16, 1.3), mode="functional")
    for code in (PhaseCode(8, 1.5), PhaseCode(24, 1.2)):
        direct = convert(model, (x, edge_index), code, mode="functional")
        assert torch.equal(snn.set_code(code)(x, edge_index), direct(x, edge_index))
        assert snn.input_encoder.T == code.T
    with pytest.raises(TypeError, match="PhaseCode"):
        snn.set_code(8)
