import pytest
import torch
from conftest import sbm_graph
from torch_geometric.nn import GCNConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from spikegcn import PhaseCode
from spikegcn.coding import quantize
from spikegcn.nn import PhaseEncoder, SpikingAggregation, SpikingGCNConv, SpikingLinear
from spikegcn.simulate import DenseOp, run_layer
from spikegcn.spikes import PhaseSpikes


def dense_ahat(edge_index, n):
    ei, w = gcn_norm(edge_index, None, n, add_self_loops=True)
    A = torch.zeros(n, n, dtype=torch.float64)
    A.index_put_((ei[1], ei[0]), w.double(), accumulate=True)
    return A


def test_gcnconv_signature_and_repr():
    conv = SpikingGCNConv(8, 4, improved=True, cached=True, add_self_loops=False, normalize=True, bias=False)
    assert conv.bias is None and conv.cached and conv.improved and not conv.add_self_loops
    assert "SpikingGCNConv(8, 4, variant='signed'" in repr(conv)
    w = conv.weight.clone()
    conv.reset_parameters()
    assert not torch.equal(w, conv.weight)
    with pytest.raises(ValueError, match="variant must be one of"):
        SpikingGCNConv(8, 4, variant="magic")
    with pytest.raises(ValueError, match="mode must be 'functional' or 'exact'"):
        SpikingGCNConv(8, 4, mode="fast")
    with pytest.raises(TypeError, match="from_gcnconv expects"):
        SpikingGCNConv.from_gcnconv(torch.nn.Linear(3, 3))
    with pytest.raises(TypeError, match="spiking layers take spikes"):
        SpikingGCNConv(8, 4)(torch.randn(5, 8), torch.zeros(2, 0, dtype=torch.long))


def test_functional_equals_independent_quantised_reference():
    data = sbm_graph(n=120, feats=8)
    n = data.num_nodes
    torch.manual_seed(0)
    conv = GCNConv(8, 5).double()
    code = PhaseCode(16, 1.3)
    enc = PhaseEncoder(16)
    enc.calibrate(data.x)
    spikes = enc(data.x)
    x_hat = spikes.values(torch.float64)
    W, b = conv.lin.weight.detach(), conv.bias.detach()
    lam_mp = (x_hat @ W.t()).abs().amax(0) * 0.8  # some saturation on purpose
    lam = torch.full((5,), 0.7, dtype=torch.float64)
    layer = SpikingGCNConv.from_gcnconv(conv, code=code, mp_scale=lam_mp, scale=lam, mode="functional")
    layer.lin.weight.data = layer.lin.weight.data.double()
    layer.aggr.bias.data = layer.aggr.bias.data.double()
    # independent reference: dense A-hat, the quantiser applied by hand
    m_ref = quantize((x_hat @ W.t()) / lam_mp, code, signed=True) * lam_mp
    h_ref = quantize(torch.relu(dense_ahat(data.edge_index, n) @ m_ref + b) / lam, code)
    out = run_layer(spikes, DenseOp(W), code, None, lam_mp, signed=True, mode="functional", dtype=torch.float64)[0]
    assert torch.equal(out.normalized(torch.float64) * lam_mp, m_ref)
    from spikegcn.nn.aggregation import build_graph_op

    ei, w = gcn_norm(data.edge_index, None, n, add_self_loops=True)
    h = run_layer(out, build_graph_op(ei, w, n, dtype=torch.float64), code, b, lam, mode="functional",
                  dtype=torch.float64)[0]
    assert torch.equal(h.normalized(torch.float64), h_ref)
    assert 0 < h.num_spikes() < h.phase.numel()


@pytest.mark.parametrize("signed", [True, False])
def test_stepped_event_path_equals_functional_at_full_wait(signed):
    # exact mode pushes every input phase after the first through the event kernel; at Tw = T it must give the
    # very same spikes as the closed form (float64: no rounding ties)
    data = sbm_graph(n=150, feats=12)
    enc = PhaseEncoder(16)
    enc.calibrate(data.x)
    spikes = enc(data.x)
    torch.manual_seed(1)
    W = torch.randn(7, 12, dtype=torch.float64) * 0.3
    code = PhaseCode(16, 1.3)
    lam = torch.full((7,), 1.5, dtype=torch.float64)
    f = run_layer(spikes, DenseOp(W), code, None, lam, signed=signed, mode="functional", dtype=torch.float64)[0]
    e = run_layer(spikes, DenseOp(W), code, None, lam, signed=signed, mode="exact", dtype=torch.float64,
                  stepped=True)[0]
    assert torch.equal(f.phase, e.phase)
    from spikegcn.nn.aggregation import build_graph_op

    ei, w = gcn_norm(data.edge_index, None, 150, add_self_loops=True)
    op = build_graph_op(ei, w, 150, dtype=torch.float64)
    fa = run_layer(f, op, code, None, lam, mode="functional", dtype=torch.float64)[0]
    ea = run_layer(f, op, code, None, lam, mode="exact", dtype=torch.float64, stepped=True)[0]
    assert torch.equal(fa.phase, ea.phase) and fa.num_spikes() > 0


def test_exact_small_tw_differs_and_matches_membrane_reference():
    # a hand-checkable layer: exact mode with Tw < T reproduces Algorithm 1 run on the same input spikes
    from spikegcn.neuron import membrane_reference

    torch.manual_seed(3)
    code_in = PhaseCode(16, 1.3)
    phase = torch.randint(0, 17, (30, 10)).to(torch.int8)
    sign = torch.where(torch.rand(30, 10) < 0.5, -1, 1).to(torch.int8) * (phase > 0)
    inp = PhaseSpikes(phase=phase, code=code_in, sign=sign)
    W = torch.randn(6, 10, dtype=torch.float64) * 0.4
    code = PhaseCode(16, 1.3, Tw=3)
    out = run_layer(inp, DenseOp(W), code, None, 1.0, mode="exact", dtype=torch.float64)[0]
    planes = torch.stack([((phase == p) * sign).double() for p in range(1, 17)])  # [T_in, 30, 10]
    currents = planes @ W.t()
    ref = membrane_reference(currents, code, Q_in=1.3)[0]
    assert torch.equal(out.phase, ref)
    func = run_layer(inp, DenseOp(W), code, None, 1.0, mode="functional", dtype=torch.float64)[0]
    assert not torch.equal(out.phase, func.phase)  # late/false spikes exist at Tw = 3


def test_layer_statistics_count_spikes_times_fanout():
    data = sbm_graph(n=100, feats=6)
    n = data.num_nodes
    enc = PhaseEncoder(8)
    enc.calibrate(data.x)
    spikes = enc(data.x)
    conv = SpikingGCNConv(6, 3, code=PhaseCode(8, 1.3))
    conv.set_scales(0.5, 0.5)
    out = conv(spikes, data.edge_index)
    mp, agg = conv.stats
    assert mp.name == "mp" and agg.name == "agg"
    assert mp.in_spikes == spikes.num_spikes() and mp.additions == spikes.num_spikes() * 3
    assert mp.macs == n * 6 * 3
    ei, _ = gcn_norm(data.edge_index, None, n, add_self_loops=True)
    deg = torch.bincount(ei[0], minlength=n)  # fan-out of a source = its column of A-hat
    m_spikes = (conv.lin.stats[0].out_spikes)
    assert agg.in_spikes == m_spikes
    assert agg.macs == ei.shape[1] * 3
    # recompute exact additions from the MP output spikes
    m_out = conv.lin(spikes)
    per_node = (m_out.phase != 0).sum(1)
    assert agg.additions == float((per_node * deg).sum())
    assert agg.out_spikes == out.num_spikes()


def test_featureless_identity_input():
    n = 30
    ei = torch.randint(0, n, (2, 80))
    conv = GCNConv(n, 4, bias=False)
    layer = SpikingGCNConv.from_gcnconv(conv, code=PhaseCode(16, 1.3), mp_scale=conv.lin.weight.abs().amax(1),
                                        output="potential")
    eye = torch.sparse_coo_tensor(torch.arange(n).repeat(2, 1), torch.ones(n), (n, n))
    out_sparse = layer(eye, ei)
    out_none = layer(None, ei)
    assert torch.equal(out_sparse, out_none)
    assert layer.stats[0].in_spikes == n and layer.stats[0].macs == n * 4  # one spike per node, N*d MACs
    ref = conv(eye, ei)
    assert torch.allclose(out_none, ref, atol=0.15 * float(ref.abs().max()))


def test_aggregation_and_linear_standalone():
    data = sbm_graph(n=80, feats=5)
    enc = PhaseEncoder(16)
    enc.calibrate(data.x)
    lin = SpikingLinear(5, 4, signed=False)
    h = lin(enc(data.x))
    assert isinstance(h, PhaseSpikes) and h.sign is None and h.phase.dtype == torch.int8
    agg = SpikingAggregation(4, cached=True)
    a1 = agg(h, data.edge_index)
    assert agg._cached_op is not None
    a2 = agg(h, data.edge_index)
    assert torch.equal(a1.phase, a2.phase)
    assert "SpikingAggregation(4" in repr(agg) and "SpikingLinear(5, 4" in repr(lin)
    # a torch sparse adjacency (adj_t) gives the same result as edge_index
    n = data.num_nodes
    adj_t = torch.sparse_coo_tensor(data.edge_index.flip(0), torch.ones(data.edge_index.shape[1]), (n, n))
    a3 = SpikingAggregation(4)(h, adj_t)
    assert torch.equal(a1.phase, a3.phase)


def test_agg_first_featureless_codes_ahat_nonzeros():
    from spikegcn.spikes import SparsePhaseSpikes

    n = 40
    ei = torch.randint(0, n, (2, 150), generator=torch.Generator().manual_seed(0))
    ei = torch.cat([ei, ei.flip(0)], 1)
    conv = GCNConv(n, 6, bias=False)
    code = PhaseCode(16, 1.3)
    A = dense_ahat(ei, n)
    lam_col = A.amax(0).float()
    layer = SpikingGCNConv.from_gcnconv(conv, code=code, variant="agg_first", mp_scale=lam_col, scale=1.0,
                                        mode="functional")
    out = layer(None, ei)
    h = layer.aggr(None, ei)
    assert isinstance(h, SparsePhaseSpikes) and h.phase.numel() == int((A != 0).sum())
    dense_h = h.values_upto(16).to_dense().double()
    ref_h = torch.where(A != 0, quantize(A / lam_col.double(), code) * lam_col.double(), torch.zeros_like(A))
    assert torch.allclose(dense_h, ref_h, atol=1e-6)
    ref_out = quantize(torch.relu(ref_h.float() @ conv.lin.weight.detach().t()), code)
    assert torch.equal(out.normalized(), ref_out)
    agg, mp = layer.stats
    assert agg.in_spikes == n and agg.out_neurons == h.phase.numel() and agg.macs == h.phase.numel()
    assert mp.macs == h.phase.numel() * 6 and mp.additions == h.num_spikes() * 6
    # exact mode with a short wait runs the sparse spikes through the event kernel
    layer.set_mode("exact")
    layer.code = layer.lin.code = layer.aggr.code = PhaseCode(16, 1.3, Tw=2)
    out_exact = layer(None, ei)
    assert out_exact.phase.shape == out.phase.shape


def test_composite_delta_is_the_prefix_difference_bit_for_bit():
    """The event path's per-phase input of a composite operator (decoded once per layer, masked per phase; the
    binary input's prefix kept from phase to phase) equals values_upto(p) - values_upto(p - 1) bit for bit, for one
    and two streams (with an offset), shared cache and all."""
    from spikegcn.coding import encode, encode_binary
    from spikegcn.operators import Chain, Dense, Join, Sparse, Streams, _values, sparse_matrix
    from spikegcn.spikes import BinarySpikes

    gen = torch.Generator().manual_seed(0)
    n, c, code = 40, 6, PhaseCode(8, 1.4)
    x = torch.randn(n, c, generator=gen)
    phase, sign = encode(x / x.abs().max(), code, signed=True)
    ph = PhaseSpikes(phase=phase, code=code, scale=torch.full((c,), 0.7), sign=sign)
    bits, bsign = encode_binary(x / x.abs().max(), 8, signed=True)
    bi = BinarySpikes(bits=bits, T=8, scale=torch.tensor(1.3), sign=bsign)
    ei = torch.randint(0, n, (2, 120), generator=gen)
    adj = sparse_matrix(ei, None, (n, n), torch.float32)
    w1, w2 = torch.randn(5, c, generator=gen), torch.randn(5, c, generator=gen)
    op = Join(Chain(Sparse(adj), Dense(w1)), Dense(w2), inputs=(0, 1))
    for items, offsets in (((ph, ph), (0, 0)), ((ph, bi), (0, 2)), ((bi, bi), (1, 0))):
        inp = Streams(items, offsets)
        cache: dict = {}
        for p in range(1, inp.T_in + 1):
            xs = [_values(i, p - o, torch.float32) - _values(i, p - o - 1, torch.float32)
                  for i, o in zip(items, offsets)]
            want = op.forward(xs) if any(bool(v.any()) for v in xs) else None
            got = op.delta(inp, p, torch.float32, cache)
            assert (got is None) == (want is None)
            if want is not None:
                assert torch.equal(got, want), (offsets, p)
