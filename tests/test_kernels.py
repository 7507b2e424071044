import pytest
import torch

from spikegcn.kernels import HAS_TORCH_SCATTER, DenseSynapses, GraphSynapses, accumulate_events


def random_events(seed, n=40, f=6, e=120):
    g = torch.Generator().manual_seed(seed)
    row = torch.randint(0, n, (e,), generator=g)
    col = torch.randint(0, f, (e,), generator=g)
    # dyadic values: every summation order gives the same float result
    val = torch.randint(-8, 9, (e,), generator=g).double() / 16
    return row, col, val


def graph(seed, n=40, m=300):
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, m), generator=g)
    w = torch.randint(1, 5, (m,), generator=g).double() / 8
    return ei, w


@pytest.mark.parametrize("backend", ["native"] + (["torch_scatter"] if HAS_TORCH_SCATTER else []))
def test_graph_events_match_dense_reference(backend):
    row, col, val = random_events(0)
    ei, w = graph(1)
    syn = GraphSynapses.from_edge_index(ei, w, 40)
    out = accumulate_events(row, col, val, syn, torch.zeros(40, 6, dtype=torch.float64), backend=backend, chunk=97)
    A = torch.zeros(40, 40, dtype=torch.float64)
    A.index_put_((ei[1], ei[0]), w, accumulate=True)  # A[target, source]
    X = torch.zeros(40, 6, dtype=torch.float64)
    X.index_put_((row, col), val, accumulate=True)
    assert torch.equal(out, A @ X)


@pytest.mark.parametrize("backend", ["native"] + (["torch_scatter"] if HAS_TORCH_SCATTER else []))
def test_dense_events_match_matmul(backend):
    row, col, val = random_events(2)
    W_t = torch.randint(-4, 5, (6, 5)).double() / 4
    out = accumulate_events(row, col, val, DenseSynapses(W_t), torch.zeros(40, 5, dtype=torch.float64),
                            backend=backend, chunk=17)
    X = torch.zeros(40, 6, dtype=torch.float64)
    X.index_put_((row, col), val, accumulate=True)
    assert torch.equal(out, X @ W_t)


@pytest.mark.skipif(not HAS_TORCH_SCATTER, reason="torch-scatter not installed")
def test_backends_identical_and_phase_binned_buffer():
    row, col, val = random_events(3, e=500)
    ei, w = graph(4)
    syn = GraphSynapses.from_edge_index(ei, w, 40)
    bins = torch.randint(0, 4, (500,), generator=torch.Generator().manual_seed(5))
    outs = []
    for be in ("native", "torch_scatter"):
        buf = torch.zeros(4, 40, 6, dtype=torch.float64)
        outs.append(accumulate_events(row, col, val, syn, buf, bins=bins, backend=be))
    assert torch.equal(outs[0], outs[1])
    # each bin equals the 2-D accumulation of its own events
    for b in range(4):
        sel = bins == b
        ref = accumulate_events(row[sel], col[sel], val[sel], syn, torch.zeros(40, 6, dtype=torch.float64))
        assert torch.equal(outs[0][b], ref)
    W_t = torch.randn(6, 3, dtype=torch.float64)
    d = [accumulate_events(row, col, val, DenseSynapses(W_t), torch.zeros(4, 40, 3, dtype=torch.float64),
                           bins=bins, backend=be) for be in ("native", "torch_scatter")]
    assert torch.allclose(d[0], d[1], rtol=0, atol=1e-12)


def test_bad_backend_and_buffer():
    row, col, val = random_events(0)
    syn = DenseSynapses(torch.ones(6, 2))
    with pytest.raises(ValueError, match="unknown scatter backend"):
        accumulate_events(row, col, val.float(), syn, torch.zeros(40, 2), backend="cuda-magic")
    with pytest.raises(ValueError, match="needs the bin of every event"):
        accumulate_events(row, col, val.float(), syn, torch.zeros(2, 40, 2))


def test_fused_cpu_aggregation_matches_event_path():
    from spikegcn import PhaseCode
    from spikegcn.kernels import fused_cpu
    from spikegcn.nn.aggregation import build_graph_op
    from spikegcn.simulate import run_layer
    from spikegcn.spikes import PhaseSpikes

    if fused_cpu.load() is None:
        pytest.skip("fused CPU kernels not built for this environment (`spikegcn build-kernels`)")
    g = torch.Generator().manual_seed(0)
    n, f = 400, 24
    ei = torch.randint(0, n, (2, 4000), generator=g)
    # dyadic weights and Q = 2, lambda = 1: every partial sum is exact, so both paths must agree bit for bit
    w = torch.randint(1, 8, (4000,), generator=g).float() / 8
    op = build_graph_op(ei, w, n)
    ph = torch.randint(0, 9, (n, f), generator=g).to(torch.int8)
    sg = (torch.where(torch.rand(n, f, generator=g) < 0.5, -1, 1) * (ph > 0)).to(torch.int8)
    inp = PhaseSpikes(phase=ph, code=PhaseCode(8, 2.0), sign=sg)
    bias = torch.randint(-4, 5, (f,), generator=g).float() / 16
    for tw in (0, 2, 5, 8):
        for signed in (False, True):
            code = PhaseCode(8, 2.0, Tw=tw)
            a = run_layer(inp, op, code, bias, 2.0, signed=signed, mode="exact", backend="fused")[0]
            b = run_layer(inp, op, code, bias, 2.0, signed=signed, mode="exact", backend="native", stepped=True)[0]
            if tw < 7:
                b = run_layer(inp, op, code, bias, 2.0, signed=signed, mode="exact", backend="native")[0]
            assert torch.equal(a.phase, b.phase), (tw, signed)
            if signed:
                assert torch.equal(a.sign, b.sign)
            assert 0 < a.num_spikes() < a.phase.numel()


@pytest.mark.parametrize("n,f,T", [(300, 200, 16), (200, 7, 12), (150, 33, 31)])
def test_fused_int8_code_kernels_match_float_kernel(n, f, T):
    """The AVX-512 and AVX2 kernels (int8 codes, late phases in registers) give the portable float kernel's spikes
    bit for bit on non-dyadic values, feature tails (F % 16, F % 8 != 0) and many late phases (T = 31, small Tw:
    the register-held maxima, 16 and 12 bins, and the memory fallback beyond)."""
    from spikegcn import PhaseCode
    from spikegcn.kernels import fused_cpu
    from spikegcn.nn.aggregation import build_graph_op
    from spikegcn.spikes import PhaseSpikes

    mod = fused_cpu.load()
    if mod is None or mod.cpu_isa() < 1:
        pytest.skip("needs the fused kernels (`spikegcn build-kernels`) on an AVX2 or AVX-512 CPU")
    kernels = ["avx2"] + (["avx512"] if mod.cpu_isa() >= 2 else [])
    g = torch.Generator().manual_seed(f)
    ei = torch.randint(0, n, (2, 20 * n), generator=g)
    op = build_graph_op(ei, torch.rand(20 * n, generator=g), n)
    ph = torch.randint(0, T + 1, (n, f), generator=g).to(torch.int8)
    bias = torch.randn(f, generator=g)
    adj64 = torch.sparse_csr_tensor(op.adj.crow_indices().long(), op.adj.col_indices().long(), op.adj.values(),
                                    op.adj.shape)
    for has_sign in (False, True):
        sg = (torch.where(torch.rand(n, f, generator=g) < 0.5, -1, 1) * (ph > 0)).to(torch.int8) if has_sign else None
        scale_in = torch.rand(f, generator=g) + 0.5 if has_sign else torch.tensor(0.7)  # per channel, scalar
        inp = PhaseSpikes(phase=ph, code=PhaseCode(T, 1.3), sign=sg, scale=scale_in)
        # T = 31: Tw = 14 gives 16 late phases (AVX-512's register maximum), Tw = 18 gives 12 (AVX2's)
        for tw in sorted({0, 3, 8, T - 2, T} | ({14, 18} if T == 31 else set())):
            for signed in (False, True):
                thr = PhaseCode(T, 1.3, Tw=tw).thresholds()
                scale = torch.rand(f, generator=g) * 5 + 1
                b = fused_cpu.aggregate_exact(op.adj, inp, bias, scale, thr, T, tw, signed, kernel="portable")
                assert torch.unique(b[0]).numel() > 3  # a spread of fire phases, not a degenerate case
                for k in kernels:
                    for adj in (op.adj, adj64):  # int32 and int64 indices
                        a = fused_cpu.aggregate_exact(adj, inp, bias, scale, thr, T, tw, signed, kernel=k)
                        assert torch.equal(a[0], b[0]), (k, has_sign, tw, signed)
                        if signed:
                            assert torch.equal(a[1], b[1]), (k, has_sign, tw)


@pytest.mark.parametrize("n,f,T", [(300, 200, 16), (200, 7, 12), (150, 33, 31)])
def test_aggregation_bins_equal_per_phase_sparse_products(n, f, T, monkeypatch):
    """The late-phase bins of A x (SAGE-like operators' exact path) equal torch.sparse.mm of each phase's values bit
    for bit, on AVX-512 and AVX2, feature tails, and more late phases than the registers hold; other inputs get None."""
    from spikegcn import PhaseCode
    from spikegcn.kernels import fused_cpu
    from spikegcn.operators import _values, sparse_matrix
    from spikegcn.spikes import PhaseSpikes

    mod = fused_cpu.load()
    if mod is None or mod.cpu_isa() < 1:
        pytest.skip("needs the fused kernels (`spikegcn build-kernels`) on an AVX2 or AVX-512 CPU")
    g = torch.Generator().manual_seed(f)
    ei = torch.stack([torch.randint(0, n, (12 * n,), generator=g), torch.randint(0, n // 2, (12 * n,), generator=g)])
    adj = sparse_matrix(ei, torch.rand(12 * n, generator=g), (n // 2, n), torch.float32)
    ph = torch.randint(0, T + 1, (n, f), generator=g).to(torch.int8)
    sg = (torch.where(torch.rand(n, f, generator=g) < 0.5, -1, 1) * (ph > 0)).to(torch.int8)
    inp = PhaseSpikes(phase=ph, code=PhaseCode(T, 1.3), sign=sg, scale=torch.rand(f, generator=g) + 0.5)
    v = _values(inp, T, torch.float32)
    for isa in ["avx2"] + (["avx512"] if mod.cpu_isa() >= 2 else []):
        monkeypatch.setenv("SPIKEGCN_CPU_ISA", isa)
        for k0 in sorted({0, 3, T // 2, T - 1}):
            bins = fused_cpu.aggregate_bins(adj, inp, k0)
            assert bins.shape == (n // 2, T - k0, f)
            for q in range(T - k0):
                want = torch.sparse.mm(adj, torch.where(ph == k0 + 1 + q, v, torch.zeros(())))
                assert torch.equal(bins[:, q], want), (isa, k0, q)
    monkeypatch.setenv("SPIKEGCN_CPU_ISA", "portable")
    assert fused_cpu.aggregate_bins(adj, inp, 3) is None  # no int8-code kernel: the caller aggregates per phase
    monkeypatch.delenv("SPIKEGCN_CPU_ISA")
    assert fused_cpu.aggregate_bins(adj.to(torch.float64), inp, 3) is None
    assert fused_cpu.aggregate_bins(adj, inp, T) is None  # no late phase left


def test_fused_kernel_choice_and_bad_input(monkeypatch):
    """"auto" picks the widest int8-code kernel the CPU has, capped by SPIKEGCN_CPU_ISA, and the portable one
    where codes cannot be used; inconsistent arguments raise instead of reading past a table."""
    from spikegcn import PhaseCode
    from spikegcn.kernels import fused_cpu
    from spikegcn.nn.aggregation import build_graph_op
    from spikegcn.spikes import PhaseSpikes

    mod = fused_cpu.load()
    if mod is None:
        pytest.skip("needs the fused kernels (`spikegcn build-kernels`)")
    n, f, T = 40, 5, 16
    g = torch.Generator().manual_seed(0)
    op = build_graph_op(torch.randint(0, n, (2, 200), generator=g), torch.rand(200, generator=g), n)
    ph = torch.randint(0, T + 1, (n, f), generator=g).to(torch.int8)
    inp = PhaseSpikes(phase=ph, code=PhaseCode(T, 1.3))
    thr, scale = PhaseCode(T, 1.3, Tw=4).thresholds(), torch.ones(f)

    calls = []

    class Spy:
        def __getattr__(self, name):
            fn = getattr(mod, name)
            if name.startswith("aggregate"):
                return lambda *a: (calls.append(name if name == "aggregate_exact" else ("codes", a[-1])), fn(*a))[1]
            return fn

    monkeypatch.setattr(fused_cpu, "load", lambda: Spy())
    have = int(mod.cpu_isa())
    for env, cap in ((None, 2), ("avx512", 2), ("AVX2", 1), ("portable", 0)):
        if env is None:
            monkeypatch.delenv("SPIKEGCN_CPU_ISA", raising=False)
        else:
            monkeypatch.setenv("SPIKEGCN_CPU_ISA", env)
        calls.clear()
        fused_cpu.aggregate_exact(op.adj, inp, None, scale, thr, T, 4, False)
        isa = min(have, cap)
        assert calls == [("codes", isa) if isa else "aggregate_exact"], env
    monkeypatch.setenv("SPIKEGCN_CPU_ISA", "sse9")
    with pytest.raises(ValueError, match="SPIKEGCN_CPU_ISA"):
        fused_cpu.aggregate_exact(op.adj, inp, None, scale, thr, T, 4, False)
    monkeypatch.delenv("SPIKEGCN_CPU_ISA", raising=False)
    with pytest.raises(ValueError, match="kernel must be"):
        fused_cpu.aggregate_exact(op.adj, inp, None, scale, thr, T, 4, False, kernel="avx")
    if have < 2:
        with pytest.raises(RuntimeError, match="cannot run the avx512"):
            fused_cpu.aggregate_exact(op.adj, inp, None, scale, thr, T, 4, False, kernel="avx512")
    long_code = PhaseSpikes(phase=ph, code=PhaseCode(40, 1.1))
    thr40 = PhaseCode(40, 1.1, Tw=4).thresholds()
    with pytest.raises(RuntimeError, match="T <= 31"):  # a forced int8-code kernel where codes cannot be used
        fused_cpu.aggregate_exact(op.adj, long_code, None, scale, thr40, 40, 4, False, kernel="avx2")
    calls.clear()
    fused_cpu.aggregate_exact(op.adj, long_code, None, scale, thr40, 40, 4, False)
    assert calls == ["aggregate_exact"]  # T > 31: the portable kernel

    with pytest.raises(ValueError, match="T_in = 20 differs"):
        fused_cpu.aggregate_exact(op.adj, inp, None, scale, thr, 20, 4, False)
    bad = PhaseSpikes(phase=ph.clone().fill_(T + 1), code=PhaseCode(T, 1.3))
    with pytest.raises(ValueError, match="fire phases must lie in 0..16"):
        fused_cpu.aggregate_exact(op.adj, bad, None, scale, thr, T, 4, False)
    with pytest.raises(ValueError, match="does not match 39 input nodes"):
        fused_cpu.aggregate_exact(op.adj, PhaseSpikes(phase=ph[:39], code=inp.code), None, scale, thr, T, 4, False)
    with pytest.raises(ValueError, match="bias has 3 entries"):
        fused_cpu.aggregate_exact(op.adj, inp, torch.zeros(3), scale, thr, T, 4, False)
    with pytest.raises(ValueError, match="Tw must be"):
        fused_cpu.aggregate_exact(op.adj, inp, None, scale, thr, T, -1, False)


_compiled = pytest.mark.skipif(__import__("spikegcn.kernels.fused_cpu", fromlist=["load"]).load() is None,
                               reason="compiled CPU kernels not built (spikegcn build-kernels)")


@_compiled
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("shape", [(5000,), (3, 7, 33, 17), (2, 4099), (4, 16, 33, 31)])  # the last: threaded
def test_compiled_encoder_counts_equal_torch(signed, shape):
    """The vectorised encoder (the widest variant this CPU runs) and the saturated / fired counts it takes in its
    own pass equal the torch path's phases and counts, block tails and values on the thresholds included."""
    from spikegcn import PhaseCode
    from spikegcn.coding import encode_counted, saturated_count
    from spikegcn.kernels import fused_cpu

    code = PhaseCode(16, 1.3)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=g) * 0.8
    x.view(-1)[:5] = torch.tensor([1.0, 2.0, -3.0, 0.0, code.thresholds(torch.float32)[-1].item()])
    phase, sign, sat, fired = encode_counted(x, code, signed=signed)
    n_le = torch.searchsorted(code.thresholds(torch.float32).flip(0), (x.abs() if signed else x).contiguous(),
                              right=True)
    ref = torch.where(n_le > 0, code.T + 1 - n_le, torch.zeros_like(n_le))
    assert torch.equal(phase.long(), ref)
    assert sat == saturated_count(x, signed) and fired == int((ref > 0).sum())
    if signed:
        assert torch.equal(sign, (torch.sign(x) * (ref > 0)).to(torch.int8))
    bad = x.clone()
    bad.view(-1)[7] = float("nan")
    assert fused_cpu.encode_phase(bad, code.thresholds(torch.float32).flip(0), signed)[2] == 1


@_compiled
@pytest.mark.parametrize("signed", [False, True])
def test_encoder_counts_thresholds_exactly_for_every_T(signed):
    """The compiled encoder gives #(thresholds <= a) exactly, for every T up to 31 and a longer code, with values
    on, just above and just below every threshold, NaN, infinities, zeros and negatives, and for an unsorted
    threshold array (not a code's)."""
    from spikegcn import PhaseCode
    from spikegcn.kernels import fused_cpu

    g = torch.Generator().manual_seed(3)

    def check(thr):
        near = torch.cat([thr, torch.nextafter(thr, torch.full_like(thr, 9.0)),
                          torch.nextafter(thr, torch.full_like(thr, -9.0))])
        x = torch.cat([near, -near, torch.rand(3001, generator=g) * 1.5 - 0.2, torch.randn(333, generator=g),
                       torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1e-30])])
        x = x[torch.randperm(x.numel(), generator=g)]
        a = x.abs() if signed else x
        n_le = (a[:, None] >= thr[None, :]).sum(1)  # NaN compares false: 0
        ref = torch.where(n_le > 0, thr.numel() + 1 - n_le, torch.zeros_like(n_le))
        phase, sign, bad, sat, fired = fused_cpu.encode_phase(x, thr, signed)
        assert torch.equal(phase.long(), ref), thr.numel()
        assert fired == int((ref > 0).sum()) and bad == 3
        if signed:
            assert torch.equal(sign, (torch.sign(x).nan_to_num(0) * (ref > 0)).to(torch.int8))

    for T in [*range(1, 32), 40]:
        check(PhaseCode(T, 1.3).thresholds(torch.float32).flip(0).contiguous())
    table = fused_cpu.load().encoder_table  # the path each table takes: bucket shift, -1 search, -2 linear
    assert table(PhaseCode(8, 1.3).thresholds(torch.float32).flip(0)) == 20
    assert table(PhaseCode(16, 1.3).thresholds(torch.float32).flip(0)) == 21
    assert table(PhaseCode(31, 1.3).thresholds(torch.float32).flip(0)) == -1  # too wide for 32 buckets
    assert table(torch.tensor([0.25, 0.2500001, 0.5])) == -1  # two in one bucket at every shift
    assert table(torch.tensor([0.0, 0.5, 0.75])) == -1 and table(torch.tensor([0.5, 0.1])) == -2
    # the AVX-512 encoder's first guess from a float's top bits: Q near 1 and near 2, with and without the shift
    # (finer or coarser buckets, or too many for the table: binary search), subnormal and huge values
    for Q, shift in [(1.05, True), (1.1, False), (1.6, True), (1.99, False), (1.99, True)]:
        for T in (2, 7, 16, 31):
            check(PhaseCode(T, Q, shift=shift).thresholds(torch.float32).flip(0).contiguous())
    check(torch.tensor([1e-40, 1e-39, 3e-38, 0.25, 0.2500001, 0.5, 3e38]))  # subnormal, two in one bucket, huge
    check(torch.tensor([1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7]))  # wider than 32 buckets
    check(torch.tensor([0.0, 0.5, 0.75]))  # a threshold at zero
    check(torch.tensor([0.1, 0.5, 0.3, 0.9, 0.05, 0.7]))  # unsorted


@_compiled
@pytest.mark.parametrize("signed", [False, True])
def test_compiled_binary_codec_equals_torch_formulas(signed, monkeypatch):
    """The compiled binary encoder and decoder give the torch path's codes, signs and values bit for bit (for
    int32 and int64 codes, values on and next to every code step, zeros, saturating and subnormal values), count
    the saturated inputs in the same pass, and refuse NaN/inf and (unsigned) negative inputs as it does."""
    from spikegcn.coding import decode_binary, encode_binary, encode_binary_counted, saturated_count
    from spikegcn.kernels import fused_cpu

    g = torch.Generator().manual_seed(5)
    for T in (1, 4, 16, 30, 31, 53, 62):
        steps = torch.arange(0, 2 ** min(T, 12) + 1, dtype=torch.float64) * 2.0 ** -min(T, 12)
        near = torch.cat([steps, torch.nextafter(steps, torch.full_like(steps, 2.0)),
                          torch.nextafter(steps, torch.full_like(steps, -2.0))]).float()
        x = torch.cat([near, torch.rand(70001, generator=g) * 1.2,  # threaded, and past 1: saturating
                       torch.tensor([0.0, -0.0, 1.0, 1.5, 3e38, 1e-40, 2.0 ** -T, 1 - 2.0 ** -T])])
        if signed:
            x = x * torch.where(torch.rand(x.shape, generator=g) < 0.5, -1.0, 1.0)
        else:
            x = x.abs()
        bits, sign, sat = encode_binary_counted(x, T, signed)
        with monkeypatch.context() as m:
            m.setattr(fused_cpu, "encode_binary", lambda *a: None)
            m.setattr(fused_cpu, "decode_binary", lambda *a: None)
            ref_bits, ref_sign, ref_sat = encode_binary_counted(x, T, signed)
            ref_values = decode_binary(ref_bits, T, ref_sign)
        assert bits.dtype == ref_bits.dtype and torch.equal(bits, ref_bits), T
        assert (sign is None) == (ref_sign is None) and (sign is None or torch.equal(sign, ref_sign))
        assert sat == ref_sat == saturated_count(x, signed=True)
        assert torch.equal(decode_binary(bits, T, sign), ref_values)
        assert torch.equal(decode_binary(bits.view(-1, 2)[:, 0], T, None),  # strided, no sign
                           (ref_bits.view(-1, 2)[:, 0].double() * 2.0 ** -T).float())
    for T in range(50, 63):  # values >= 1 saturate at 2^T - 1 (in float64 that would round to 2^T from T = 54)
        sat_x = torch.tensor([1.0, 1.5, 3e38, 0.5])
        for path in ("compiled", "torch"):
            with monkeypatch.context() as m:
                if path == "torch":
                    m.setattr(fused_cpu, "encode_binary", lambda *a: None)
                bits = encode_binary(sat_x, T, signed)[0]
            assert bits.tolist() == [2 ** T - 1] * 3 + [2 ** (T - 1)], (T, path)
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="contains 1 NaN/inf"):
            encode_binary(torch.tensor([0.5, bad, 0.25]), 8, signed)
    if not signed:
        with pytest.raises(ValueError, match="negative inputs"):
            encode_binary(torch.tensor([0.5, -0.25]), 8, signed=False)


@_compiled
def test_count_per_position_equals_torch():
    from spikegcn.kernels import fused_cpu

    g = torch.Generator().manual_seed(2)
    phase = (torch.randint(-3, 17, (9, 5, 7, 11), generator=g).clamp_min(0)).to(torch.int8)
    counts = fused_cpu.count_per_position(phase)
    assert torch.equal(counts, (phase != 0).sum((0, 1)))
    many = torch.ones(2 ** 21 + 3, 1, 2, dtype=torch.int8)  # each thread's 32-bit counters flushed on the way
    assert fused_cpu.count_per_position(many).tolist() == [2 ** 21 + 3] * 2
    assert fused_cpu.count_per_position(phase.float()) is None  # not spike data: the caller counts with torch
    from spikegcn.coding import binary_spike_count

    for dtype in (torch.int32, torch.int64):  # binary codes: one spike per set bit
        bits = torch.randint(0, 2 ** 16, (4, 3, 5, 6), generator=g).to(dtype)
        assert torch.equal(fused_cpu.count_per_position(bits), binary_spike_count(bits, 16).sum((0, 1)))


@_compiled
def test_encoder_decoder_variants_agree():
    """The portable, AVX2 and AVX-512 encoder and decoder variants (SPIKEGCN_CPU_ISA caps the choice, each run in
    a fresh process) give the same phases, signs, counts and values, alone and in the fused closed-form pass."""
    import subprocess
    import sys

    script = (
        "import torch, hashlib\n"
        "from spikegcn import PhaseCode\n"
        "from spikegcn.kernels import fused_cpu\n"
        "code = PhaseCode(16, 1.3); g = torch.Generator().manual_seed(5)\n"
        "x = torch.randn(3, 5, 37, 41, generator=g); x.view(-1)[:3] = torch.tensor([float('nan'), 2.0, -0.0])\n"
        "out = []\n"
        "for signed in (False, True):\n"
        "    ph, sg, bad, sat, fired = fused_cpu.encode_phase(x, code.thresholds(torch.float32).flip(0), signed)\n"
        "    v = fused_cpu.decode_phase(ph, code.values(torch.float32), sg, torch.ones(()))\n"
        "    w = fused_cpu.decode_phase(ph, code.values(torch.float32), sg, torch.rand(41, generator=g))\n"
        "    out += [ph.numpy().tobytes(), (sg.numpy().tobytes() if sg is not None else b''), v.numpy().tobytes(),\n"
        "            w.numpy().tobytes(),\n"
        "            str((bad, sat, fired)).encode()]\n"
        "    z = x.clone(); sc = (torch.rand(3, 3, 74, 81, generator=g), torch.randn(5, generator=g), 1, (2, 2))\n"
        "    j = fused_cpu.encode_join(z, code.thresholds(torch.float32).flip(0), signed, bias=torch.randn(5, "
        "generator=g), shortcut=sc, table=code.values(torch.float32))\n"
        "    out += [j[0].numpy().tobytes(), z.numpy().tobytes(), str(j[2:]).encode()]\n"
        "print(hashlib.sha256(b''.join(out)).hexdigest())\n")
    digests = set()
    for isa in ("portable", "avx2", "avx512"):
        env = {**__import__("os").environ, "SPIKEGCN_CPU_ISA": isa}
        run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        digests.add(run.stdout.strip())
    assert len(digests) == 1


@_compiled
@pytest.mark.parametrize("C", [7, 64, 256])
def test_dense_exact_kernel_matches_event_path(C, monkeypatch):
    """A dense graph layer (x W^T) with Tw < T runs one matmul plus late spikes x fan-out on the compiled kernel:
    phases, signs and the saturation count equal the event path's, bit for bit, for one-spike and binary inputs,
    signed and unsigned neurons, per-channel and scalar lambdas."""
    from spikegcn import PhaseCode
    from spikegcn.kernels import conv_cpu
    from spikegcn.simulate import DenseOp, run_layer
    from spikegcn.spikes import BinarySpikes, PhaseSpikes

    served = []
    real = conv_cpu.fire_late

    def spy(*a, **k):
        out = real(*a, **k)
        served.append(out is not None)
        return out

    monkeypatch.setattr(conv_cpu, "fire_late", spy)
    g = torch.Generator().manual_seed(C)
    n, f, T = 300, 40, 16
    op = DenseOp(torch.randn(C, f, generator=g) / 4)
    ph = torch.randint(0, T + 1, (n, f), generator=g).to(torch.int8)
    sg = (torch.where(torch.rand(n, f, generator=g) < 0.5, -1, 1) * (ph > 0)).to(torch.int8)
    lam_in = torch.rand(f, generator=g) + 0.5
    inputs = [PhaseSpikes(phase=ph, code=PhaseCode(T, 1.3), scale=lam_in, sign=sg),
              BinarySpikes(bits=torch.randint(0, 2**T, (n, f), generator=g), T=T, scale=torch.tensor(1.5))]
    bias = torch.randn(C, generator=g) / 8
    saturated: list = []
    for inp in inputs:
        for scale in (torch.rand(C, generator=g) + 0.5, torch.tensor(0.8)):
            # the last two: an output code shorter than the input's (T_out + Tw < T_in: late input phases never
            # reach the neuron, nor its final potential)
            for t_out, tw, signed in ((T, 0, True), (T, 3, False), (T, 8, True), (T, 12, False), (6, 2, True),
                                      (6, 3, False)):
                code = PhaseCode(t_out, 1.3, Tw=tw)
                a, sa = run_layer(inp, op, code, bias, scale, signed=signed, mode="exact", backend="fused")
                b, sb = run_layer(inp, op, code, bias, scale, signed=signed, mode="exact", backend="native")
                assert torch.equal(a.phase, b.phase), (type(inp).__name__, tw, signed)
                assert (a.sign is None) == (not signed) and (not signed or torch.equal(a.sign, b.sign))
                assert sa.saturated_neurons == sb.saturated_neurons
                saturated.append(sa.saturated_neurons)
                assert 0 < a.num_spikes() < a.phase.numel()
    assert served == [True] * 24  # every fused run went through the kernel
    assert max(saturated) > 0


@_compiled
@pytest.mark.parametrize("C,dtype", [(47, torch.float32), (130, torch.float32), (64, torch.float64)])
def test_dense_exact_equals_conv_exact(C, dtype):
    """dense_exact (bins in registers, 64-channel blocks) gives conv_exact's 1 x 1 results bit for bit: phases,
    signs and counts, with and without bias and divisor, signed and unsigned, on every instruction set, for one-spike
    and binary late lists (several spikes per channel)."""
    from spikegcn import PhaseCode
    from spikegcn.kernels import conv_cpu, fused_cpu
    from spikegcn.spikes import BinarySpikes, PhaseSpikes

    mod = fused_cpu.load()
    g = torch.Generator().manual_seed(C)
    n, f, T, k0 = 200, 40, 16, 6
    w = (torch.randn(1, 1, f, C, generator=g) / 4).to(dtype)
    ph = torch.randint(0, T + 1, (n, f), generator=g).to(torch.int8)
    inputs = [PhaseSpikes(phase=ph, code=PhaseCode(T, 1.3), sign=None),
              BinarySpikes(bits=torch.randint(0, 2**T, (n, f), generator=g), T=T)]
    thr = PhaseCode(T, 1.3).thresholds(dtype)
    for x in inputs:
        ptr, ch, b, v = conv_cpu.late_spikes(x, k0, 0, dtype)
        first = (torch.randn(n, C, generator=g) / 2).to(dtype)
        for div, bias, signed in ((torch.rand(C, generator=g).to(dtype) + 0.5, None, True),
                                  (None, torch.randn(C, generator=g).to(dtype) / 8, False)):
            d = first.new_empty(0) if div is None else div
            bb = first.new_empty(0) if bias is None else bias
            for isa in range(mod.cpu_isa() + 1):
                ref = mod.conv_exact(first.reshape(n, C, 1, 1), [ptr], [ch], [b], [v], [w], [1, 1, 1, 1, 0, 0, 1, 1],
                                     thr, k0, T, 4, d, signed, isa, False, bb)
                out = mod.dense_exact(first, ptr, ch, b, v, w[0, 0], thr, k0, T, 4, d, signed, isa, bb)
                assert torch.equal(out[0], ref[0].view(n, C)) and int(out[4]) == int(ref[4]) > 0
                assert int(out[2]) == int(ref[2]) and int(out[3]) == int(ref[3])
                assert not signed or torch.equal(out[1], ref[1].view(n, C))


@_compiled
@pytest.mark.parametrize("n,f,T,k0,signed,per_feature", [(300, 37, 16, 9, True, True), (200, 100, 16, 5, False, False),
                                                         (150, 16, 24, 12, True, True), (150, 33, 12, 1, True, False)])
def test_binary_aggregation_bins_equal_per_phase_sparse_products(n, f, T, k0, signed, per_feature):
    """The late-phase bins of A x for binary multi-spike input (the first layer of SAGE-like operators) equal
    torch.sparse.mm of each phase's prefix differences bit for bit; unsupported codes get None."""
    from spikegcn.kernels import fused_cpu
    from spikegcn.operators import Sparse, _fired_at, sparse_matrix
    from spikegcn.spikes import BinarySpikes

    if fused_cpu.max_isa() != "avx512":
        pytest.skip("the binary-input bins kernel needs AVX-512")
    g = torch.Generator().manual_seed(n + f)
    ei = torch.stack([torch.randint(0, n, (12 * n,), generator=g), torch.randint(0, n // 2, (12 * n,), generator=g)])
    adj = sparse_matrix(ei, torch.rand(12 * n, generator=g), (n // 2, n), torch.float32)
    bits = torch.randint(0, 2**T, (n, f), generator=g).to(torch.int32)
    sign = (torch.where(torch.rand(n, f, generator=g) < 0.5, -1, 1) * (bits != 0)).to(torch.int8) if signed else None
    scale = torch.rand(f, generator=g) * 3 + 0.1 if per_feature else torch.tensor(1.7)
    inp = BinarySpikes(bits=bits, T=T, scale=scale, sign=sign)
    out = fused_cpu.aggregate_bins_bits(adj, inp, k0)
    cache: dict = {}
    ref = torch.stack([Sparse(adj).forward([_fired_at(inp, k0 + 1 + q, torch.float32, cache)]) for q in range(T - k0)],
                      1)
    assert out is not None and torch.equal(out, ref)
    assert fused_cpu.aggregate_bins_bits(adj, BinarySpikes(bits=bits.long(), T=T), k0) is None  # int64 codes
    assert fused_cpu.aggregate_bins_bits(adj, inp, 0 if T > 12 else T) is None  # > 12 late phases, or none


def test_huge_page_buffers_and_in_place_codecs_keep_values():
    """fused_cpu.empty gives torch.empty's shape, dtype and device (advised for huge pages on the CPU from 8 MiB,
    also under a meta default device); the binary codec, the feature gather, the encoder's division and the dense
    products written into such buffers give the values of the plain torch formulas."""
    import math

    from spikegcn.coding import decode_binary, encode_binary
    from spikegcn.kernels import fused_cpu
    from spikegcn.operators import Dense

    for shape, dtype in (((3, 5), torch.float32), ((1 << 20, 3), torch.float64), ((1 << 21, 5), torch.int8)):
        t = fused_cpu.empty(shape, dtype, torch.device("cpu"))
        assert (tuple(t.shape), t.dtype, t.device.type) == (shape, dtype, "cpu")
        t.fill_(1)  # every page writable
        assert int(t.sum()) == math.prod(shape)
    with torch.device("meta"):
        assert fused_cpu.empty((1 << 22,), torch.float32, torch.device("cpu")).device.type == "cpu"
    assert fused_cpu.empty((4,), torch.float32, torch.device("meta")).device.type == "meta"

    g = torch.Generator().manual_seed(3)
    x = torch.randn(3000, 700, generator=g) * 0.6  # 8.4 MB: the advised path
    x[0, :4] = torch.tensor([1.5, -1.5, 0.0, -0.0])
    for T in (8, 16, 40):
        bits, sign = encode_binary(x, T)
        mag = x.abs().to(torch.float64)
        ref = torch.floor(mag * 2.0**T).clamp_(0, 2**T - 1).to(torch.int32 if T <= 30 else torch.int64)
        assert torch.equal(bits, ref) and bits.dtype == ref.dtype
        for dt in (torch.float32, torch.float64):
            want = (ref.to(torch.float64) * 2.0**-T).to(dt) * sign.to(dt)
            assert torch.equal(decode_binary(bits, T, sign, dt), want)
    w = torch.randn(256, 700, generator=g)
    assert torch.equal(Dense(w).forward([x]), x @ w.t())
    xg = x.clone().requires_grad_()
    assert Dense(w).forward([xg]).requires_grad  # autograd keeps the plain product


def _thp_mode() -> str:
    try:
        text = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        return ""
    return text[text.find("[") + 1:text.find("]")]


@_compiled
@pytest.mark.skipif(_thp_mode() != "madvise", reason="the hint matters where THP is in 'madvise' mode")
def test_huge_page_hint_cuts_page_faults_and_can_be_turned_off():
    """Writing a fresh 64 MiB fused_cpu.empty buffer faults it in 2 MiB pages (a few hundred faults, not 16,384);
    SPIKEGCN_HUGE_PAGES=0 turns the hint off."""
    import subprocess
    import sys

    script = ("import resource, torch\n"
              "from spikegcn.kernels import fused_cpu\n"
              "f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
              "fused_cpu.empty((1 << 24,), torch.float32, torch.device('cpu')).fill_(1.0)\n"
              "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)\n")
    faults = {}
    for flag in ("1", "0"):
        env = {**__import__("os").environ, "SPIKEGCN_HUGE_PAGES": flag}
        run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        faults[flag] = int(run.stdout.strip().splitlines()[-1])
    assert faults["1"] < 4000 <= 16000 <= faults["0"], faults
