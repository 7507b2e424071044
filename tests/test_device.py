"""Device- and dtype-true SNNs: every tensor the library creates takes its device and dtype from the inputs or the
model's buffers.

The CPU proxy for "runs on any device": a converted model run on CPU inputs inside ``with torch.device("meta"):``
gives the normal result (a tensor created without an explicit device would land on 'meta' and fail). The tests
whose id contains ``cuda`` run when a GPU is present (``benchmarks/gpu_check.py`` selects them with ``-k cuda``).
"""
import copy

import pytest
import torch
from torch import nn
from torch_geometric.nn import GCNConv

from spikegcn import PhaseCode, convert
from spikegcn.kernels import DenseSynapses, GraphSynapses, accumulate_events, scatter_backend
from spikegcn.nn.aggregation import SpikingAggregation
from spikegcn.spikes import PhaseSpikes
from spikegcn.vision.models import CifarResNet, lenet5

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# functional, exact with Tw = T (closed form), exact with Tw < T (phase by phase: the fused/Triton/event kernels)
MODES = [("functional", None), ("exact", None), ("exact", 3)]


def _on_meta_default(fn):
    with torch.device("meta"):
        return fn()


class FeaturelessGCN(nn.Module):
    """Text GCN's shape: X = I (a sparse identity), two GCN layers."""

    def __init__(self, n, hidden, classes):
        super().__init__()
        self.conv1 = GCNConv(n, hidden)
        self.conv2 = GCNConv(hidden, classes)

    def forward(self, x, edge_index):
        return self.conv2(self.conv1(x, edge_index).relu(), edge_index)


def _eye(n, device="cpu"):
    return torch.sparse_coo_tensor(torch.arange(n, device=device).repeat(2, 1), torch.ones(n, device=device), (n, n))


@pytest.mark.parametrize("mode,tw", MODES)
def test_meta_default_device_gcn(sbm, mode, tw):
    data, model = sbm
    snn = convert(model, data, PhaseCode(8, 1.3, Tw=tw), mode=mode)
    ref = snn(data.x, data.edge_index)
    out = _on_meta_default(lambda: snn(data.x, data.edge_index))
    assert out.device.type == "cpu" and torch.equal(out, ref)


@pytest.mark.parametrize("mode,tw", MODES)
def test_meta_default_device_featureless_agg_first(sbm, mode, tw):
    data, _ = sbm
    n = data.num_nodes
    torch.manual_seed(0)
    model = FeaturelessGCN(n, 8, 4).eval()
    eye = _eye(n)
    snn = convert(model, (eye, data.edge_index), PhaseCode(8, 1.3, Tw=tw), mode=mode, variant="agg_first")
    ref = snn(eye, data.edge_index)
    out = _on_meta_default(lambda: snn(eye, data.edge_index))
    assert torch.equal(out, ref)


def _randomize_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


CNNS = {
    "lenet": lambda: lenet5(in_channels=2, num_classes=5, in_size=8),
    "resnet": lambda: _randomize_bn(CifarResNet((1, 1, 1), num_classes=5, in_channels=2, width=4)),
}


@pytest.mark.parametrize("name", sorted(CNNS))
@pytest.mark.parametrize("mode,tw", MODES)
def test_meta_default_device_cnn(name, mode, tw):
    torch.manual_seed(0)
    model = CNNS[name]().eval()
    x = torch.rand(6, 2, 8, 8)
    snn = convert(model, x, PhaseCode(8, 1.3, Tw=tw), mode=mode)
    ref = snn(x)
    out = _on_meta_default(lambda: snn(x))
    assert out.device.type == "cpu" and torch.equal(out, ref)


@pytest.mark.parametrize("mode,tw", [("functional", None), ("exact", 3)])
def test_float64_models_compute_in_float64(sbm, mode, tw):
    data, model = sbm
    m64 = type(model)(data.num_features, 32, int(data.y.max()) + 1)
    m64.load_state_dict(model.state_dict())
    m64 = m64.double().eval()
    x64 = data.x.double()
    code = PhaseCode(8, 1.3, Tw=tw)
    snn = convert(m64, (x64, data.edge_index), code, mode=mode)
    assert {b.dtype for b in snn.buffers() if b.is_floating_point()} == {torch.float64}
    out = snn(x64, data.edge_index)
    assert out.dtype == torch.float64
    # a float32 SNN converted to float64 afterwards follows too
    out2 = convert(model, data, code, mode=mode).double()(x64, data.edge_index)
    assert out2.dtype == torch.float64
    torch.manual_seed(0)
    cnn = CNNS["resnet"]().double()
    img = torch.rand(4, 2, 8, 8, dtype=torch.float64)
    assert convert(cnn, img, code, mode=mode)(img).dtype == torch.float64


@pytest.mark.parametrize("device", DEVICES)
def test_cached_adjacency_follows_to(sbm, device):
    data, _ = sbm
    n, f = data.num_nodes, 5
    agg = SpikingAggregation(f, code=PhaseCode(8, 1.3, Tw=3), cached=True)
    g = torch.Generator().manual_seed(0)
    spikes = PhaseSpikes(phase=torch.randint(0, 9, (n, f), generator=g).to(torch.int8), code=PhaseCode(8, 1.3))
    ref = agg(spikes, data.edge_index).phase
    assert agg._cached_op is not None
    agg = agg.to(device).double()
    assert agg._cached_op is None  # rebuilt on the next call, on the new device and dtype
    moved = PhaseSpikes(phase=spikes.phase.to(device), code=spikes.code, scale=spikes.scale.to(device))
    out = agg(moved, data.edge_index.to(device)).phase
    adj = agg._cached_op.adj
    assert adj.device.type == device and adj.dtype == torch.float64
    # float64 sums of float32-exact inputs: the same spikes up to threshold ties
    assert (out.cpu() == ref).float().mean() > 0.99


@pytest.mark.parametrize("device", DEVICES + ["meta"])
def test_scatter_backend_per_device(device):
    be = scatter_backend("auto", device)
    assert be in ("torch_scatter", "native")
    if device == "meta":
        assert be == "native"  # torch-scatter has no kernels for it
        with pytest.raises(RuntimeError, match="no kernels for meta|not installed"):
            scatter_backend("torch_scatter", "meta")
        return  # the event kernel sizes its chunks from the data: nothing to run on 'meta'
    g = torch.Generator().manual_seed(0)
    row = torch.randint(0, 30, (200,), generator=g)
    col = torch.randint(0, 4, (200,), generator=g)
    val = torch.randint(-8, 9, (200,), generator=g).double() / 16
    ei = torch.randint(0, 30, (2, 300), generator=g)
    syn = GraphSynapses.from_edge_index(ei, torch.randint(1, 5, (300,), generator=g).double() / 8, 30)
    W_t = torch.randint(-4, 5, (4, 3), generator=g).double() / 4
    ref_g = accumulate_events(row, col, val, syn, torch.zeros(30, 4, dtype=torch.float64), backend="native")
    ref_d = accumulate_events(row, col, val, DenseSynapses(W_t), torch.zeros(30, 3, dtype=torch.float64))
    dev = torch.device(device)
    out_g = accumulate_events(row.to(dev), col.to(dev), val.to(dev), syn.to(dev),
                              torch.zeros(30, 4, dtype=torch.float64, device=dev))
    out_d = accumulate_events(row.to(dev), col.to(dev), val.to(dev), DenseSynapses(W_t.to(dev)),
                              torch.zeros(30, 3, dtype=torch.float64, device=dev))
    assert out_g.device.type == device and out_d.device.type == device
    # dyadic values: every summation order gives the same sums
    assert torch.equal(out_g.cpu(), ref_g) and torch.equal(out_d.cpu(), ref_d)


def test_scatter_backend_without_torch_scatter(monkeypatch):
    """Without torch-scatter (or with a build lacking the device's kernels) "auto" takes index_add_, and asking for
    torch-scatter says why it cannot run."""
    from spikegcn.kernels import scatter

    monkeypatch.setattr(scatter, "HAS_TORCH_SCATTER", False)
    assert scatter_backend("auto", "cpu") == "native"
    with pytest.raises(RuntimeError, match="not installed"):
        scatter_backend("torch_scatter", "cpu")
    with pytest.raises(ValueError, match="unknown scatter backend"):
        scatter_backend("cuda-magic", "cpu")


def _spy_triton(monkeypatch):
    from spikegcn.kernels import triton_exact

    calls = []
    real = triton_exact.aggregate_exact
    monkeypatch.setattr(triton_exact, "aggregate_exact", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    return calls


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode,tw", MODES)
def test_gcn_runs_on_device(sbm, device, mode, tw, monkeypatch):
    """Converted on the device (model and data there), the SNN runs there and agrees with the CPU run; exact mode
    with Tw < T takes the Triton kernel on CUDA where Triton is installed."""
    data, model = sbm
    code = PhaseCode(8, 1.3, Tw=tw)
    ref = convert(model, data, code, mode=mode)(data.x, data.edge_index)
    d = data.to(device)
    snn = convert(copy.deepcopy(model).to(device), d, code, mode=mode)
    assert {b.device.type for b in snn.buffers()} == {device}
    calls = _spy_triton(monkeypatch)
    out = snn(d.x, d.edge_index)
    moved = convert(model, data, code, mode=mode).to(device)(d.x, d.edge_index)
    for o in (out, moved):
        assert o.device.type == device
        if device == "cpu":
            assert torch.equal(o, ref)
        else:  # other summation orders may move a neuron across a threshold: compare the predictions
            assert float((o.argmax(1).cpu() == ref.argmax(1)).float().mean()) > 0.97
    from spikegcn.kernels import triton_exact

    uses_kernel = device == "cuda" and mode == "exact" and tw is not None and triton_exact.available(device)
    assert bool(calls) == uses_kernel


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode,tw", [("functional", None), ("exact", 3)])
@pytest.mark.parametrize("name", sorted(CNNS))  # lenet: max-pool gates (a GPU pools their priorities as floats)
def test_cnn_runs_on_device(device, mode, tw, name):
    torch.manual_seed(0)
    model = CNNS[name]()
    x = torch.rand(6, 2, 8, 8)
    code = PhaseCode(8, 1.3, Tw=tw)
    ref = convert(model, x, code, mode=mode)(x)
    snn = convert(model.to(device), x.to(device), code, mode=mode)
    out = snn(x.to(device))
    assert out.device.type == device
    if device == "cpu":
        assert torch.equal(out, ref)
    else:  # other summation orders may move a neuron across a threshold: compare the predictions
        assert float((out.argmax(1).cpu() == ref.argmax(1)).float().mean()) >= 5 / 6


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_gpu_check_refuses_cleanly_without_cuda():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    p = subprocess.run([sys.executable, str(root / "benchmarks" / "gpu_check.py")], capture_output=True, text=True,
                       cwd=root, timeout=300)
    assert p.returncode == 2 and p.stdout == ""
    assert len(p.stderr.strip().splitlines()) == 1 and "no CUDA device" in p.stderr


def test_meta_default_device_compiled_cpu_paths(sbm):
    """The compiled CPU decoder (tensors of >= _FAST_MIN elements) and the portable fused exact-mode kernel (input
    codes with T > 31, or without bias) create their scratch tensors on the input's device, not the default one."""
    from spikegcn.coding import _FAST_MIN, decode, encode
    from spikegcn.kernels import fused_cpu
    from spikegcn.nn.aggregation import build_graph_op

    if fused_cpu.load() is None:
        pytest.skip("needs the fused kernels (`spikegcn build-kernels`)")
    code = PhaseCode(16, 1.3)
    phase, sign = encode(torch.randn(2 * _FAST_MIN, generator=torch.Generator().manual_seed(0)), code, signed=True)
    ref = decode(phase, code, sign)
    out = _on_meta_default(lambda: decode(phase, code, sign))
    assert out.device.type == "cpu" and torch.equal(out, ref)

    data, _ = sbm
    n, f, T = data.num_nodes, 6, 40  # T > 31: the portable float kernel
    op = build_graph_op(data.edge_index, None, n)
    g = torch.Generator().manual_seed(1)
    inp = PhaseSpikes(phase=torch.randint(0, T + 1, (n, f), generator=g).to(torch.int8), code=PhaseCode(T, 1.3))
    thr, scale = PhaseCode(T, 1.3, Tw=5).thresholds(), torch.rand(f, generator=g) + 1
    ref = fused_cpu.aggregate_exact(op.adj, inp, None, scale, thr, T, 5, True)
    out = _on_meta_default(lambda: fused_cpu.aggregate_exact(op.adj, inp, None, scale, thr, T, 5, True))
    assert torch.unique(ref[0]).numel() > 3 and out[0].device.type == "cpu"
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])
