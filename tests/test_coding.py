
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikegcn import PhaseCode
from spikegcn.coding import (
    best_base,
    binary_bitplanes,
    binary_spike_count,
    decode,
    decode_binary,
    encode,
    encode_binary,
    mape,
    quantize,
)


# ------------------------------------------------------------------------------------ PhaseCode
def test_phasecode_defaults_and_derived():
    code = PhaseCode(T=16, Q=1.3)
    assert code.Tw == 16 and code.shift and code.functional
    assert code.c == pytest.approx(0.884615384615, abs=1e-12)
    assert code.min_value == pytest.approx(0.01954, abs=5e-6)
    assert code.underflow_bound == pytest.approx(0.01728, abs=5e-6)
    assert code.max_relative_error == pytest.approx(0.3 / 2.3)
    assert PhaseCode(4, 2, shift=False).max_relative_error == 0.5
    assert PhaseCode(16, 1.3, Tw=4).Tw == 4 and not PhaseCode(16, 1.3, Tw=4).functional
    assert PhaseCode(24, 1.2).underflow_bound == pytest.approx(0.01384, abs=5e-6)
    assert PhaseCode(16, 1.2).underflow_bound == pytest.approx(0.0595, abs=5e-5)
    assert PhaseCode(16, 2).underflow_bound == pytest.approx(2.29e-5, rel=2e-3)


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(T=0, Q=1.3), "T must be an integer >= 1"),
        (dict(T=2.5, Q=1.3), "T must be an integer"),
        (dict(T="16", Q=1.3), "T must be an integer"),
        (dict(T=True, Q=1.3), "T must be an integer"),
        (dict(T=16, Q=1.0), "Q must be a finite real number > 1"),
        (dict(T=16, Q=0.5), "Q must be a finite real number > 1"),
        (dict(T=16, Q=float("nan")), "Q must be a finite real number > 1"),
        (dict(T=16, Q="big"), "Q must be a real number > 1"),
        (dict(T=16, Q=1.3, Tw=-1), "Tw must be an integer >= 0"),
        (dict(T=16, Q=1.3, Tw=3.5), "Tw must be an integer"),
        (dict(T=16, Q=1.3, shift="yes"), "shift must be a bool"),
    ],
)
def test_phasecode_rejects_invalid(kw, msg):
    with pytest.raises(ValueError, match=msg):
        PhaseCode(**kw)


def test_phasecode_replace_keeps_tw_equal_t():
    code = PhaseCode(16, 1.3)
    assert code.replace(T=24).Tw == 24
    assert PhaseCode(16, 1.3, Tw=8).replace(T=24).Tw == 8


# ------------------------------------------------------------- worked examples (docs/method.md, section 4)
def test_spec_vectors_floor():
    code = PhaseCode(T=4, Q=2, shift=False)
    x = torch.tensor([0.75, 0.6875, 0.4375, 0.375, 0.1])
    assert quantize(x, code).tolist() == [0.5, 0.5, 0.25, 0.25, 0.0]


def test_spec_vectors_round():
    code = PhaseCode(T=4, Q=2)
    x = torch.tensor([0.75, 0.6875, 0.4375, 0.375, 0.3, 0.1, 0.09])
    assert quantize(x, code).tolist() == [1.0, 0.5, 0.5, 0.5, 0.25, 0.125, 0.0]
    phase, sign = encode(x, code)
    assert sign is None and phase.dtype == torch.int8
    assert phase.tolist() == [1, 2, 2, 2, 3, 4, 0]


def test_paper_single_spike_example_binary():
    # Section 3: 12 (1100) and 11 (1011) -> 8; 7 (0111) and 6 (0110) -> 4 (floor, values /16)
    code = PhaseCode(T=4, Q=2, shift=False)
    x = torch.tensor([12, 11, 7, 6], dtype=torch.float64) / 16
    assert (quantize(x, code) * 16).tolist() == [8, 8, 4, 4]


def test_saturation_underflow_and_negative():
    code = PhaseCode(16, 1.3)
    x = torch.tensor([5.0, 1.0, 0.9, code.underflow_bound, code.underflow_bound * 0.999, 0.0, -0.5])
    phase, _ = encode(x, code)
    assert phase[0] == 1 and phase[1] == 1
    assert phase[3] == 16 and phase[4] == 0 and phase[5] == 0 and phase[6] == 0
    q = quantize(x.double(), code)
    assert q[0] == 1.0 and q[-1] == 0.0


def test_signed_encoding():
    code = PhaseCode(4, 2)
    x = torch.tensor([0.75, -0.75, -0.3, 0.09, -0.09, 0.0])
    phase, sign = encode(x, code, signed=True)
    assert phase.tolist() == [1, 1, 3, 0, 0, 0]
    assert sign.dtype == torch.int8 and sign.tolist() == [1, -1, -1, 0, 0, 0]
    assert quantize(x, code, signed=True).tolist() == [1.0, -1.0, -0.25, 0.0, 0.0, 0.0]


def test_exact_threshold_ties_fire():
    # docs/method.md, A22: ">=" at the threshold
    code = PhaseCode(8, 1.3)
    thr = code.thresholds(torch.float64)
    phase, _ = encode(thr, code)
    assert phase.tolist() == list(range(1, 9))
    phase, _ = encode(torch.nextafter(thr, torch.zeros_like(thr)), code)
    assert phase.tolist() == list(range(2, 9)) + [0]


def test_encode_matches_definition_bruteforce():
    torch.manual_seed(0)
    for T, Q, shift in [(16, 1.3, True), (24, 1.2, True), (5, 2.0, False), (1, 1.5, True)]:
        code = PhaseCode(T, Q, shift=shift)
        x = torch.rand(20000, dtype=torch.float64) * 1.2
        thr = code.thresholds(torch.float64)
        ge = x[:, None] >= thr[None, :]
        expected = torch.where(ge.any(1), ge.to(torch.int64).argmax(1) + 1, 0)
        assert torch.equal(encode(x, code)[0].long(), expected)


def test_encode_rejects_nan_and_ints():
    code = PhaseCode(16, 1.3)
    with pytest.raises(ValueError, match="NaN"):
        encode(torch.tensor([0.5, float("nan")]), code)
    with pytest.raises(ValueError, match="NaN/inf"):
        quantize(torch.tensor([float("inf")]), code)
    with pytest.raises(TypeError, match="floating-point"):
        encode(torch.tensor([1, 2]), code)


def test_large_T_uses_int16():
    code = PhaseCode(200, 1.01)
    phase, _ = encode(torch.tensor([1.0, 0.2]), code)
    assert phase.dtype == torch.int16 and phase[0] == 1 and phase[1] > 127


# -------------------------------------------------------------------------------- hypothesis
@settings(max_examples=60, deadline=None)
@given(
    T=st.integers(1, 32),
    Q=st.floats(1.05, 2.0),
    shift=st.booleans(),
    xs=st.lists(st.floats(-0.5, 3.0, allow_nan=False), min_size=2, max_size=64),
)
def test_encoder_monotone(T, Q, shift, xs):
    code = PhaseCode(T, Q, shift=shift)
    x = torch.tensor(sorted(xs), dtype=torch.float64)
    q = quantize(x, code)
    assert bool((q[1:] >= q[:-1]).all())


@settings(max_examples=80, deadline=None)
@given(T=st.integers(2, 32), Q=st.floats(1.05, 2.0), shift=st.booleans(), u=st.floats(0.0, 1.0))
def test_encoder_relative_error_bound_in_range(T, Q, shift, u):
    code = PhaseCode(T, Q, shift=shift)
    # a in the representable range [Q^{-(T-1)}, 1], log-uniform
    a = code.min_value ** (1 - u)
    q = quantize(torch.tensor([a], dtype=torch.float64), code).item()
    assert abs(q - a) / a <= code.max_relative_error + 1e-12


@settings(max_examples=60, deadline=None)
@given(T=st.integers(1, 32), Q=st.floats(1.05, 2.0), shift=st.booleans(), f=st.floats(0.0, 0.99999))
def test_encoder_underflow(T, Q, shift, f):
    code = PhaseCode(T, Q, shift=shift)
    a = code.underflow_bound * f
    assert quantize(torch.tensor([a], dtype=torch.float64), code).item() == 0.0
    assert quantize(torch.tensor([code.underflow_bound], dtype=torch.float64), code).item() == pytest.approx(
        code.min_value
    )


@settings(max_examples=60, deadline=None)
@given(T=st.integers(1, 32), Q=st.floats(1.05, 2.0), xs=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=32))
def test_round_error_never_worse_than_floor(T, Q, xs):
    x = torch.tensor(xs, dtype=torch.float64)
    code = PhaseCode(T, Q)
    inside = x >= code.min_value
    e_round = (quantize(x, code) - x.clamp(max=1)).abs()
    e_floor = (quantize(x, code.replace(shift=False)) - x.clamp(max=1)).abs()
    assert bool((e_round[inside] <= e_floor[inside] + 1e-15).all())


# ---------------------------------------------------------------------------------- binary input
def test_binary_encoding_bits_and_values():
    x = torch.tensor([0.5, 0.75, 0.1, 0.999, 1.0, 2.0, -0.625, 0.0])
    bits, sign = encode_binary(x, T=4)
    # 0.1 -> 0.0625 (0001); 0.999 -> 0.9375; >= 1 saturates at 1 - 2^-4
    assert bits.tolist() == [8, 12, 1, 15, 15, 15, 10, 0]
    assert sign.tolist() == [1, 1, 1, 1, 1, 1, -1, 0]
    assert decode_binary(bits, 4, sign).tolist() == [0.5, 0.75, 0.0625, 0.9375, 0.9375, 0.9375, -0.625, 0.0]
    planes = binary_bitplanes(bits, 4)
    assert planes.shape == (4, 8)
    assert planes[:, 1].tolist() == [True, True, False, False]  # 0.75 = 2^-1 + 2^-2
    assert binary_spike_count(bits, 4).tolist() == [1, 2, 1, 4, 4, 4, 2, 0]
    # reconstruct the value from the planes with the 2^-t phase weights
    w = 2.0 ** -torch.arange(1, 5, dtype=torch.float64)
    assert torch.allclose((planes.double() * w[:, None]).sum(0) * sign, decode_binary(bits, 4, sign).double())


@settings(max_examples=50, deadline=None)
@given(T=st.integers(1, 30), xs=st.lists(st.floats(-0.9999, 0.9999), min_size=1, max_size=32))
def test_binary_is_greedy_floor_expansion(T, xs):
    x = torch.tensor(xs, dtype=torch.float64)
    bits, sign = encode_binary(x, T)
    planes = binary_bitplanes(bits, T)
    # greedy reference
    r = x.abs().clone()
    for t in range(1, T + 1):
        b = r >= 2.0**-t
        assert torch.equal(b, planes[t - 1])
        r = r - b.double() * 2.0**-t
    err = (decode_binary(bits, T, sign, torch.float64) - x).abs()
    assert bool((err < 2.0**-T + 1e-15).all())


def test_binary_rejects_bad_input():
    with pytest.raises(ValueError, match="negative"):
        encode_binary(torch.tensor([-0.5]), 8, signed=False)
    with pytest.raises(ValueError, match="T must be an integer"):
        encode_binary(torch.tensor([0.5]), 0)
    with pytest.raises(ValueError, match="NaN"):
        encode_binary(torch.tensor([float("nan")]), 8)


# ------------------------------------------------------------------------------------------ MAPE
REFERENCE = {
    16: {1.05: 53.50, 1.10: 28.23, 1.15: 16.42, 1.20: 11.19, 1.25: 9.06, 1.30: 8.43, 1.35: 8.53, 1.40: 8.98,
         1.50: 10.29, 1.60: 11.75, 1.80: 14.57, 2.00: 17.11},
    24: {1.05: 37.30, 1.10: 14.52, 1.15: 7.73, 1.20: 6.10, 1.25: 6.16, 1.30: 6.78, 1.35: 7.58, 1.40: 8.43,
         1.50: 10.10, 1.60: 11.68, 1.80: 14.56, 2.00: 17.11},
}


@pytest.mark.parametrize("T", [16, 24])
def test_mape_reference_curve(T):
    for Q, ref in REFERENCE[T].items():
        assert mape(Q, T) * 100 == pytest.approx(ref, abs=0.05), (T, Q)


def test_mape_floor_and_trapezoid_crosscheck():
    assert mape(2.0, 16, shift=False) * 100 == pytest.approx(29.93, abs=0.01)
    # independent check: dense log grid, trapezoid rule (spec: agrees to ~1e-4)
    from scipy import stats

    code = PhaseCode(16, 1.3)
    a = np.concatenate([np.linspace(1e-12, 1e-9, 200), np.geomspace(1e-9, 1.0, 400000)])
    ahat = quantize(torch.from_numpy(a), code).numpy()
    f = stats.norm(0, 1).pdf(a)
    val = np.trapezoid(np.abs(ahat - a) / a * f, a) / (stats.norm.cdf(1) - 0.5)
    assert val == pytest.approx(mape(1.3, 16), abs=2e-4)


def test_best_base():
    assert best_base(16) == 1.31
    assert best_base(24) == 1.22


def test_mape_rejects_bad_sigma():
    with pytest.raises(ValueError, match="sigma"):
        mape(1.3, 16, sigma=0)


def test_compiled_encoder_matches_torch_path(monkeypatch):
    import spikegcn.coding as C
    from spikegcn.kernels import fused_cpu

    if fused_cpu.load() is None:
        pytest.skip("compiled kernels not built for this environment (`spikegcn build-kernels`)")
    code = PhaseCode(16, 1.3)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300_001, generator=g) * 0.4
    thr = code.thresholds()
    x[:16], x[16:32] = thr, torch.nextafter(thr, torch.zeros(16))  # exact ties and just below them
    x[40], x[41] = 7.0, -7.0
    fast = [encode(x, code, signed=s) for s in (False, True)]
    monkeypatch.setattr(C, "_FAST_MIN", 1 << 40)  # force the torch path
    slow = [encode(x, code, signed=s) for s in (False, True)]
    assert torch.equal(fast[0][0], slow[0][0])
    assert torch.equal(fast[1][0], slow[1][0]) and torch.equal(fast[1][1], slow[1][1])
    monkeypatch.undo()
    x[123] = float("nan")
    with pytest.raises(ValueError, match="1 NaN/inf"):
        encode(x, code)


def test_compiled_decoder_matches_torch_path(monkeypatch):
    import spikegcn.coding as C
    from spikegcn.kernels import fused_cpu
    from spikegcn.spikes import PhaseSpikes

    if fused_cpu.load() is None:
        pytest.skip("compiled kernels not built for this environment (`spikegcn build-kernels`)")
    code = PhaseCode(16, 1.3)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1000, 200, generator=g)
    phase, sign = encode(x, code, signed=True)
    scale = torch.rand(200, generator=g) + 0.5
    spikes = PhaseSpikes(phase=phase, code=code, scale=scale, sign=sign)
    fast_norm, fast_val = decode(phase, code, sign), spikes.values()
    monkeypatch.setattr(C, "_FAST_MIN", 1 << 40)
    import spikegcn.spikes as S

    monkeypatch.setattr(S, "_FAST_MIN", 1 << 40)
    assert torch.equal(fast_norm, decode(phase, code, sign))
    assert torch.equal(fast_val, spikes.values())
