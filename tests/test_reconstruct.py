"""reconstruct(): the rounding it simulates is the functional SNN's; refitting brings the SNN's outputs closer to the
ANN's on held-out data; a huge ridge leaves the weights; the user's model, determinism, loaders, and refusals."""
import pytest
import torch
import torch.nn.functional as F
from conftest import sbm_graph
from test_pyg_zoo import ZOO, AppnpNet, D, Gcn2Net, GinNet, GraphCls, _graphs
from torch import nn
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.nn import GCNConv, GINConv, global_add_pool
from torch_geometric.nn.models import GCN, GIN

import spikegcn
from spikegcn import PhaseCode
from spikegcn.conversion.reconstruct import _rounders, _set_observers

CODE = PhaseCode(16, 1.3)
COARSE = PhaseCode(8, 1.6)  # large round-off, so that the refit has something to correct


@pytest.fixture(scope="module")
def g():
    data = sbm_graph(seed=1, n=90, feats=8)
    data.x = data.x.to(D)
    return data


MODELS = {**ZOO, "gin": GinNet, "appnp": AppnpNet, "gcn2": Gcn2Net,
          "basic_gcn": lambda: GCN(8, 16, 2, 4), "basic_gin": lambda: GIN(8, 16, 2, 4)}


@pytest.mark.parametrize("name", list(MODELS))
def test_rounded_prepared_model_is_the_functional_snn(g, name):
    """What the refit fits to: the prepared model with each observer rounding as the SNN's neurons do."""
    torch.manual_seed(0)
    model = MODELS[name]().to(D).eval()
    prepared = spikegcn.prepare(model, g)
    for code in (CODE, COARSE):
        _set_observers(prepared, _rounders(prepared, code, True, "binary"))
        with torch.no_grad():
            out = prepared(g.x, g.edge_index)
        _set_observers(prepared, None)
        ref = spikegcn.convert(prepared, code, mode="functional")(g.x, g.edge_index)
        assert float((out - ref).abs().max()) <= 1e-5 * float(ref.abs().max()), name  # no rounding step apart


def test_rounded_prepared_graph_classifier_is_the_functional_snn():
    torch.manual_seed(0)
    model = GraphCls("add").to(D).eval()
    b = next(iter(DataLoader(_graphs(), batch_size=6)))
    prepared = spikegcn.prepare(model, b)
    _set_observers(prepared, _rounders(prepared, COARSE, True, "binary"))
    with torch.no_grad():
        out = prepared(b.x, b.edge_index, b.batch)
    _set_observers(prepared, None)
    ref = spikegcn.convert(prepared, COARSE, mode="functional")(b.x, b.edge_index, b.batch)
    assert float((out - ref).abs().max()) <= 1e-5 * float(ref.abs().max())


def _pool_graphs(k: int, seed: int) -> list[Data]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(k):
        n = int(torch.randint(6, 20, (1,), generator=gen))
        ei = torch.randint(0, n, (2, 2 * n), generator=gen)
        out.append(Data(x=torch.randn(n, 8, generator=gen, dtype=D).abs(), edge_index=torch.cat([ei, ei.flip(0)], 1)))
    return out


class AddPoolNet(nn.Module):
    """Two convolutions, global_add_pool, a two-layer head (the benchmark's graph classifier, smaller)."""

    def __init__(self, kind: str):
        super().__init__()
        make = {"gin": lambda i: GINConv(nn.Sequential(nn.Linear(i, 16), nn.ReLU(), nn.Linear(16, 16))),
                "gcn": lambda i: GCNConv(i, 16)}[kind]
        self.c1, self.c2, self.h1, self.h2 = make(8), make(16), nn.Linear(16, 16), nn.Linear(16, 3)

    def forward(self, x, edge_index, batch):
        x = F.relu(self.c2(F.relu(self.c1(x, edge_index)), edge_index))
        return self.h2(F.relu(self.h1(global_add_pool(x, batch))))


def _error(snn, model, b) -> float:
    with torch.no_grad():
        return float((snn(b.x, b.edge_index, b.batch) - model(b.x, b.edge_index, b.batch)).pow(2).mean())


@pytest.mark.filterwarnings("ignore:input features above the calibrated maximum")  # held-out graphs
@pytest.mark.parametrize("kind", ["gin", "gcn"])
@pytest.mark.parametrize("code", [CODE, COARSE], ids=["T16", "T8"])
def test_refit_brings_held_out_outputs_closer(kind, code):
    """Refitted on 100 graphs, the SNN's logits are closer to the ANN's on 60 other graphs of the same kind."""
    torch.manual_seed(0)
    model = AddPoolNet(kind).to(D).eval()
    graphs = _pool_graphs(160, seed=0)
    calib = next(iter(DataLoader(graphs[:100], batch_size=100)))
    held = next(iter(DataLoader(graphs[100:], batch_size=60)))
    plain = spikegcn.convert(model, calib, code, mode="functional")
    refit = spikegcn.convert(model, calib, code, mode="functional", reconstruct=True)
    assert _error(refit, model, held) < 0.8 * _error(plain, model, held)
    stiff = spikegcn.convert(model, calib, code, mode="functional", reconstruct=1e12)  # pulled to the ANN
    assert torch.allclose(stiff(held.x, held.edge_index, held.batch), plain(held.x, held.edge_index, held.batch),
                          rtol=1e-6, atol=1e-8)


def _head_rows(prepared, b):
    """The last map's rows: its input in the functional SNN (refitted weights) and its target (ANN input, ANN
    weights)."""
    ann = prepared.__dict__["_ann_parameters"]
    grab: list = []
    h = prepared.h2.register_forward_hook(lambda m, a, out: grab.append((a[0], out)))
    try:
        with torch.no_grad():
            _set_observers(prepared, _rounders(prepared, COARSE, True, "binary"))
            prepared(b.x, b.edge_index, b.batch)
            _set_observers(prepared, {})
            torch.func.functional_call(prepared, ann, (b.x, b.edge_index, b.batch))
    finally:
        h.remove()
        _set_observers(prepared, None)
    return grab[0][0], grab[1][1], torch.cat([ann["h2.weight"], ann["h2.bias"][:, None]], 1)


@pytest.mark.parametrize("weighting", ["relative", "uniform"])
def test_weighting_solves_its_normal_equations(weighting):
    """The head refitted after an add pool solves its ridge normal equations with the row weights
    1 / (e_n + mean e) (relative; e_n the mean square target row) or 1 (uniform); the two fits differ."""
    torch.manual_seed(0)
    model = AddPoolNet("gin").to(D).eval()
    graphs = _pool_graphs(40, seed=1)
    b = next(iter(DataLoader(graphs, batch_size=40)))
    fits = {}
    for w in ("relative", "uniform"):
        prepared = spikegcn.prepare(model, b)
        spikegcn.reconstruct(prepared, COARSE, b, ridge=1e-3, weighting=w)
        fits[w] = prepared
    prepared = fits[weighting]
    xs, y, wb0 = (t.double() for t in _head_rows(prepared, b))
    e = y.pow(2).mean(1, keepdim=True)
    omega = 1.0 / (e + e.mean()) if weighting == "relative" else torch.ones_like(e)
    x1 = torch.cat([xs, xs.new_ones(xs.shape[0], 1)], 1)
    alpha = 1e-3 * float((omega * xs * xs).sum()) / xs.shape[1]
    wb = torch.cat([prepared.h2.weight, prepared.h2.bias[:, None]], 1).double().detach()
    grad = (omega * (x1 @ wb.t() - y)).t() @ x1 + alpha * (wb - wb0)  # zero at the solution
    assert float(grad.abs().max()) <= 1e-6 * float(((omega * y).t() @ x1).abs().max())
    other = fits["uniform" if weighting == "relative" else "relative"]
    assert not torch.allclose(prepared.h2.weight, other.h2.weight)


def test_prepared_flow_equals_one_call_and_user_model_untouched(g):
    torch.manual_seed(0)
    model = GinNet().to(D).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    one = spikegcn.convert(model, g, COARSE, mode="functional", reconstruct=1e-3)
    prepared = spikegcn.prepare(model, g)
    assert spikegcn.reconstruct(prepared, COARSE, g, ridge=1e-3) is prepared
    two = spikegcn.convert(prepared, COARSE, mode="functional")
    again = spikegcn.convert(model, g, COARSE, mode="functional", reconstruct=1e-3)
    assert torch.equal(one(g.x, g.edge_index), two(g.x, g.edge_index))
    assert torch.equal(one(g.x, g.edge_index), again(g.x, g.edge_index))  # deterministic
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # the lambdas are the observed ones: refitting changes weights, not scales
    plain = spikegcn.convert(model, g, COARSE, mode="functional")
    for (_, a), (_, b) in zip(one.spiking_layers(), plain.spiking_layers()):
        assert torch.equal(a.scale, b.scale)


def test_loader_sums_over_batches():
    """Normal equations accumulate over a DataLoader's batches: the same refit as one batch of all graphs."""
    torch.manual_seed(0)
    model = GraphCls("add").to(D).eval()
    graphs = _graphs(8)
    loader = DataLoader(graphs, batch_size=3)
    full = next(iter(DataLoader(graphs, batch_size=len(graphs))))
    a = spikegcn.convert(model, loader, COARSE, mode="functional", reconstruct=True)
    b = spikegcn.convert(model, full, COARSE, mode="functional", reconstruct=True)
    out_a, out_b = a(full.x, full.edge_index, full.batch), b(full.x, full.edge_index, full.batch)
    assert torch.allclose(out_a, out_b, rtol=1e-7, atol=1e-9)
    plain = spikegcn.convert(model, full, COARSE, mode="functional")
    assert not torch.allclose(out_a, plain(full.x, full.edge_index, full.batch))


class SharedLinear(nn.Module):
    """One Linear used twice (weight sharing) and a head tied to its weight."""

    def __init__(self):
        super().__init__()
        self.inp, self.shared, self.head = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 16)
        self.out = nn.Linear(16, 4)
        self.head.weight = self.shared.weight

    def forward(self, x, edge_index):
        h = F.relu(self.inp(x))
        h = F.relu(self.shared(F.relu(self.shared(h))))
        return self.out(F.relu(self.head(h)))


def test_shared_and_tied_weights(g):
    """A module called twice is refitted on both calls' rows; weights tied across modules are left (and named)."""
    torch.manual_seed(0)
    model = SharedLinear().to(D).eval()
    plain = spikegcn.convert(model, g, COARSE, mode="functional")
    with pytest.warns(UserWarning, match=r"left 2 map\(s\) as trained: shared, head"):
        refit = spikegcn.convert(model, g, COARSE, mode="functional", reconstruct=True)
    err = lambda snn: float((snn(g.x, g.edge_index) - model(g.x, g.edge_index)).pow(2).mean())  # noqa: E731
    with torch.no_grad():
        assert err(refit) < err(plain)
    assert torch.equal(model.head.weight, model.shared.weight)  # the user's model keeps its tie


@pytest.mark.filterwarnings("ignore:input features above the calibrated maximum")
def test_basic_gin_with_batchnorm_refits(g):
    torch.manual_seed(0)
    model = GIN(8, 16, 3, 4, norm="batch_norm").to(D)
    model.train()
    with torch.no_grad():
        model(g.x, g.edge_index)
    model.eval()
    held = sbm_graph(seed=5, n=90, feats=8)
    held.x = held.x.to(D)
    plain = spikegcn.convert(model, g, COARSE, mode="functional")
    refit = spikegcn.convert(model, g, COARSE, mode="functional", reconstruct=True)
    err = lambda snn: float((snn(g.x, g.edge_index) - model(g.x, g.edge_index)).pow(2).mean())  # noqa: E731
    with torch.no_grad():
        assert err(refit) < err(plain)
    assert torch.isfinite(refit(held.x, held.edge_index)).all()


def test_second_call_refits_from_the_ann_and_failure_restores(g):
    torch.manual_seed(0)
    model = GinNet().to(D).eval()
    prepared = spikegcn.prepare(model, g)
    ann = {k: v.clone() for k, v in prepared.state_dict().items()}
    once = {k: v.clone() for k, v in spikegcn.reconstruct(prepared, COARSE, g, ridge=1e-3).state_dict().items()}
    spikegcn.reconstruct(prepared, COARSE, g, ridge=1e-1)  # another ridge: from the ANN's weights again
    again = spikegcn.reconstruct(prepared, COARSE, g, ridge=1e-3).state_dict()
    assert all(torch.equal(v, once[k]) for k, v in again.items())

    class Breaks:
        def __init__(self):
            self.passes = 0

        def __iter__(self):
            self.passes += 1
            if self.passes == 5:
                raise RuntimeError("loader broke")
            return iter([g])

    fresh = spikegcn.prepare(model, g)
    with pytest.raises(RuntimeError, match="loader broke"):
        spikegcn.reconstruct(fresh, COARSE, Breaks())
    assert all(torch.equal(v, ann[k]) for k, v in fresh.state_dict().items())  # no half-refitted model
    assert all(o.transform is None for o in fresh.observers().values())


class KeywordAndNormed(nn.Module):
    """A Linear called by keyword and a weight-normed Linear (its weight is computed, not a parameter)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 16)
        self.b = nn.utils.parametrizations.weight_norm(nn.Linear(16, 16))
        self.out = nn.Linear(16, 4)

    def forward(self, x, edge_index):
        return self.out(F.relu(self.b(F.relu(self.a(input=x)))))


def test_keyword_call_and_weight_norm(g):
    torch.manual_seed(0)
    model = KeywordAndNormed().to(D).eval()
    with pytest.warns(UserWarning, match=r"left 1 map\(s\) as trained: b\b"):
        snn = spikegcn.convert(model, g, COARSE, mode="functional", reconstruct=True)
    plain = spikegcn.convert(model, g, COARSE, mode="functional")
    assert not torch.equal(snn(g.x, g.edge_index), plain(g.x, g.edge_index))  # a and out were refitted


def test_converting_with_other_settings_than_refitted_warns(g):
    model = GinNet().to(D).eval()
    prepared = spikegcn.prepare(model, g)
    spikegcn.reconstruct(prepared, COARSE, g)
    with pytest.warns(UserWarning, match="call reconstruct\\(\\) again"):
        spikegcn.convert(prepared, CODE)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spikegcn.convert(prepared, COARSE.replace(Tw=4), mode="exact")  # the wait is not part of the rounding


def test_refusals_before_any_work(g):
    model = GinNet().to(D).eval()
    gen = (b for b in [g])
    with pytest.raises(TypeError, match="one-shot iterator"):
        spikegcn.convert(model, gen, CODE, reconstruct=True)
    with pytest.raises(ValueError, match="empty"):
        spikegcn.reconstruct(spikegcn.prepare(model, g), CODE, [])
    for bad in (-1.0, float("inf"), 1, 0, "a"):
        with pytest.raises(ValueError, match="ridge"):
            spikegcn.convert(model, g, CODE, reconstruct=bad)
    with pytest.raises(ValueError, match="finite number >= 0"):
        spikegcn.reconstruct(spikegcn.prepare(model, g), CODE, g, ridge=float("nan"))
    with pytest.raises(ValueError, match="weighting must be 'relative' or 'uniform'"):
        spikegcn.reconstruct(spikegcn.prepare(model, g), CODE, g, weighting="l1")
    with pytest.raises(ValueError, match="variant='signed' or 'relu_mp'"):
        spikegcn.convert(GCN(8, 16, 2, 4).to(D).eval(), gen, CODE, variant="agg_first", reconstruct=True)
    prepared = spikegcn.prepare(model, g)
    with pytest.raises(ValueError, match="spikegcn.reconstruct"):
        spikegcn.convert(prepared, CODE, reconstruct=True)
    with pytest.raises(TypeError, match="one-shot iterator"):
        spikegcn.reconstruct(prepared, CODE, iter([g]))
    with pytest.raises(TypeError, match="spikegcn.prepare"):
        spikegcn.reconstruct(model, CODE, g)
    agg_first = spikegcn.prepare(GCN(8, 16, 2, 4).to(D).eval(), g, variant="agg_first")
    with pytest.raises(ValueError, match="variant='signed' or 'relu_mp'"):
        spikegcn.reconstruct(agg_first, CODE, g)
    cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8, 2))
    with pytest.raises(ValueError, match="graph converter"):
        spikegcn.convert(cnn, torch.rand(4, 1, 4, 4), CODE, reconstruct=True)
    assert next(gen) is g  # nothing was read by any of the refusals
