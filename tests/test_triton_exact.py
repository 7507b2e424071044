"""The Triton exact-mode aggregation kernel (spikegcn.kernels.triton_exact) against the event path.

On the CPU it runs under Triton's interpreter (``TRITON_INTERPRET=1``, slow: the graphs are tiny); the ``cuda``
cases compile it for the GPU (``benchmarks/gpu_check.py`` selects them with ``-k cuda``). Values are dyadic (Q = 2,
weights k/8, power-of-two scales), so every summation order gives the same sums and the spikes must be equal.
"""
import pytest
import torch

pytest.importorskip("triton")

from spikegcn import PhaseCode  # noqa: E402
from spikegcn.kernels import triton_exact  # noqa: E402
from spikegcn.nn.aggregation import build_graph_op  # noqa: E402
from spikegcn.simulate import run_layer  # noqa: E402
from spikegcn.spikes import PhaseSpikes  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture
def on(monkeypatch):
    """``on(device)``: run the kernel there (CPU: under the interpreter)."""
    def setup(device):
        if device == "cpu":
            monkeypatch.setenv("TRITON_INTERPRET", "1")
        else:
            monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        return torch.device(device)
    return setup


def layer_inputs(n=10, f=8, T=8, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n, (2, 6 * n), generator=g)
    w = torch.randint(1, 8, (6 * n,), generator=g).to(dtype) / 8
    op = build_graph_op(ei, w, n, dtype=dtype)
    ph = torch.randint(0, T + 1, (n, f), generator=g).to(torch.int8)
    sg = (torch.where(torch.rand(n, f, generator=g) < 0.5, -1, 1) * (ph > 0)).to(torch.int8)
    in_scale = 2.0 ** torch.randint(-1, 2, (f,), generator=g).to(dtype)
    inp = PhaseSpikes(phase=ph, code=PhaseCode(T, 2.0), sign=sg, scale=in_scale)
    bias = torch.randint(-4, 5, (f,), generator=g).to(dtype) / 16
    return op, inp, bias


def to(op, inp, bias, device):
    from spikegcn.simulate import GraphOp

    spikes = PhaseSpikes(phase=inp.phase.to(device), code=inp.code, sign=inp.sign.to(device),
                         scale=inp.scale.to(device))
    return GraphOp(op.adj.to(device)), spikes, bias.to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tw,signed,f", [(0, True, 20), (3, False, 8), (5, True, 8)])
def test_kernel_matches_event_path(on, monkeypatch, device, tw, signed, f):
    dev = on(device)
    monkeypatch.setattr(triton_exact, "MAX_BLOCK_F", 16)  # f = 20: two feature blocks, the second one masked
    op, inp, bias = layer_inputs(f=f, seed=tw)
    code = PhaseCode(8, 2.0, Tw=tw)
    ref = run_layer(inp, op, code, bias, 2.0, signed=signed, mode="exact", backend="native", stepped=True)[0]
    op_d, inp_d, bias_d = to(op, inp, bias, dev)
    ph, sg = triton_exact.aggregate_exact(op_d.adj, inp_d, bias_d, torch.tensor(2.0, device=dev),
                                          code.thresholds(device=dev), 8, tw, signed)
    assert ph.device.type == device and ph.dtype == torch.int8
    assert torch.equal(ph.cpu(), ref.phase), (tw, signed)
    assert 0 < ref.num_spikes() < ref.phase.numel() and torch.unique(ref.phase).numel() > 3
    if signed:
        assert torch.equal(sg.cpu(), ref.sign)
    else:
        assert sg is None


@pytest.mark.parametrize("device", DEVICES)
def test_run_layer_dispatch_and_float64(on, monkeypatch, device):
    """``backend="auto"`` takes the kernel on CUDA only (the CPU has its fused kernel); ``"triton"`` forces it;
    a float64 layer computes in float64 (the adjacency's dtype)."""
    dev = on(device)
    op, inp, bias = layer_inputs(dtype=torch.float64, seed=7)
    op, inp, bias = to(op, inp, bias, dev)
    code = PhaseCode(8, 2.0, Tw=2)
    calls = []
    real = triton_exact.aggregate_exact
    monkeypatch.setattr(triton_exact, "aggregate_exact",
                        lambda adj, *a: (calls.append(adj.values().dtype), real(adj, *a))[1])
    scale = torch.tensor(2.0, dtype=torch.float64, device=dev)
    out = run_layer(inp, op, code, bias, scale, signed=True, mode="exact", backend="triton")[0]
    assert calls == [torch.float64] and out.phase.device.type == device
    ref = run_layer(inp, op, code, bias, scale, signed=True, mode="exact", backend="native", stepped=True)[0]
    assert torch.equal(out.phase, ref.phase) and torch.equal(out.sign, ref.sign)
    calls.clear()
    run_layer(inp, op, code, bias, scale, signed=True, mode="exact", backend="auto")
    assert calls == ([torch.float64] if device == "cuda" else [])


def test_unavailable_and_bad_input(monkeypatch):
    op, inp, bias = layer_inputs()
    code = PhaseCode(8, 2.0, Tw=2)
    thr = code.thresholds()
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not triton_exact.available("cpu")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        run_layer(inp, op, code, bias, 2.0, mode="exact", backend="triton")
    with pytest.raises(RuntimeError, match="cannot run on cpu"):
        triton_exact.aggregate_exact(op.adj, inp, bias, torch.tensor(2.0), thr, 8, 2, False)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    bad = PhaseSpikes(phase=inp.phase.clone(), code=inp.code)
    bad.phase[0, 0] = 9
    for args, match in [((bad, bias, 8), "must lie in 0..8"), ((inp, bias, 7), "differs from the input code"),
                        ((inp, bias[:3], 8), "bias has 3 entries")]:
        with pytest.raises(ValueError, match=match):
            triton_exact.aggregate_exact(op.adj, args[0], args[1], torch.tensor(2.0), thr, args[2], 2, False)
    with pytest.raises(ValueError, match="sparse CSR"):
        triton_exact.aggregate_exact(op.adj.to_dense(), inp, bias, torch.tensor(2.0), thr, 8, 2, False)
    with pytest.raises(ValueError, match="one device"):
        triton_exact.aggregate_exact(op.adj, inp, bias.to("meta"), torch.tensor(2.0), thr, 8, 2, False)


def test_compiles_for_sm90_without_a_gpu():
    """The CUDA kernel compiles for an H100/H200 (sm_90) with Triton's bundled toolchain, no GPU needed: catches
    what the interpreter does not check (types, layouts, register spills of the default tile)."""
    compiler = pytest.importorskip("triton.compiler.compiler")
    try:
        from triton.backends.compiler import GPUTarget
    except ImportError:
        pytest.skip("this Triton has no GPUTarget")
    import triton.language as tl

    fn = triton_exact._kernel(False).fn
    sig = {a: "*i32" for a in ("crow_ptr", "col_ptr")} | {a: "*i8" for a in ("codes_ptr", "out_phase_ptr",
                                                                              "out_sign_ptr")}
    sig |= {a: "*fp32" for a in ("val_ptr", "table_ptr", "in_scale_ptr", "bias_ptr", "inv_scale_ptr", "thr_ptr")}
    sig |= {a: "i32" for a in ("F", "T", "k0", "nl")}
    const = dict(NB=8, HAS_BIAS=True, SIGNED=True, BLOCK_E=4, BLOCK_F=256, IDX=tl.int32)
    sig |= {k: "constexpr" for k in const}
    try:
        k = compiler.compile(compiler.ASTSource(fn, sig, const), target=GPUTarget("cuda", 90, 32),
                             options={"num_warps": 8, "enable_fp_fusion": False})
    except RuntimeError as exc:  # no CUDA backend / ptxas in this Triton build
        if "ptxas" in str(exc) or "backend" in str(exc).lower():
            pytest.skip(f"Triton cannot compile for CUDA here: {exc}")
        raise
    assert ".target sm_90" in k.asm["ptx"] and "st.global" in k.asm["ptx"]
