import pytest
import torch

from spikegcn import PhaseCode
from spikegcn.coding import encode, encode_binary
from spikegcn.neuron import membrane_reference, multi_spike_fire, one_spike_fire


def random_layer(seed, n_in=64, n_out=300, T_in=16, Q_in=1.3, input_scale=1.0, batch=8):
    g = torch.Generator().manual_seed(seed)
    phases = torch.randint(0, T_in + 1, (batch, n_in), generator=g)  # 0 = silent
    W = torch.randn(n_in, n_out, generator=g, dtype=torch.float64) * 0.25
    b = torch.randn(n_out, generator=g, dtype=torch.float64) * 0.05
    onehot = torch.stack([(phases == p).double() for p in range(1, T_in + 1)])  # [T_in, batch, n_in]
    currents = onehot @ W  # raw synaptic input per phase
    v_in = input_scale * Q_in ** -torch.arange(T_in, dtype=torch.float64)
    weighted = currents * v_in[:, None, None]
    return currents, weighted, b


@pytest.mark.parametrize(
    "Q_in, Q_out, T, Tw, input_scale, signed",
    [
        (2.0, 1.3, 16, 4, 0.5, False),  # first hidden layer: binary input, base manipulation 2 -> 1.3
        (1.3, 1.3, 16, 6, 1.0, False),
        (1.3, 1.2, 24, 3, 1.0, False),
        (1.3, 1.3, 16, 0, 1.0, False),
        (1.3, 1.3, 16, 5, 1.0, True),  # signed one-spike neurons (docs/method.md, A14)
        (2.0, 1.5, 12, 2, 0.5, True),
        (1.3, 1.3, 16, 16, 1.0, False),
    ],
)
def test_value_domain_equals_membrane_domain(Q_in, Q_out, T, Tw, input_scale, signed):
    for seed in range(3):
        currents, weighted, b = random_layer(seed, T_in=T, Q_in=Q_in, input_scale=input_scale)
        code = PhaseCode(T, Q_out, Tw=Tw)
        ph_v, s_v = one_spike_fire(weighted, code, bias=b, signed=signed)
        ph_m, s_m = membrane_reference(currents, code, Q_in=Q_in, bias=b, input_scale=input_scale, signed=signed)
        assert torch.equal(ph_v, ph_m)
        if signed:
            assert torch.equal(s_v, s_m)
        assert 0 < ph_v.count_nonzero() < ph_v.numel()


def test_membrane_threshold_fusion_equals_normalised_weights():
    # theta = lambda in the threshold == weights and bias divided by lambda (docs/method.md, section 2)
    currents, weighted, b = random_layer(7)
    lam = torch.rand(300, dtype=torch.float64) + 0.5
    code = PhaseCode(16, 1.3, Tw=5)
    a = membrane_reference(currents * lam, code, Q_in=1.3, bias=b * lam, threshold=lam)[0]
    ref = membrane_reference(currents, code, Q_in=1.3, bias=b)[0]
    assert torch.equal(a, ref)


@pytest.mark.parametrize("Tw", [15, 16, 40])
def test_full_wait_equals_round_off_encoding(Tw):
    currents, weighted, b = random_layer(3)
    code = PhaseCode(16, 1.3, Tw=Tw)
    phase, _ = one_spike_fire(weighted, code, bias=b)
    full = weighted.sum(0) + b
    assert torch.equal(phase, encode(full, code)[0])
    # and the phase-stepped membrane neuron agrees
    assert torch.equal(phase, membrane_reference(currents, code, Q_in=1.3, bias=b)[0])


def test_streaming_callable_matches_tensor_input():
    currents, weighted, b = random_layer(11)
    code = PhaseCode(16, 1.3, Tw=3)
    calls = []

    def phase_input(p):
        calls.append(p)
        return None if p % 5 == 0 else weighted[p - 1]

    masked = weighted.clone()
    masked[4::5] = 0
    ph_a, _ = one_spike_fire(phase_input, code, T_in=16, bias=b)
    ph_b, _ = one_spike_fire(masked, code, bias=b)
    assert torch.equal(ph_a, ph_b)
    assert calls == list(range(1, 17))  # each input phase requested once, in order


def test_late_and_false_spikes():
    code = PhaseCode(16, 1.3, Tw=1)
    # neuron 0: big positive input early, big negative later -> false spike (fires although total is 0)
    # neuron 1: input arrives only late -> late spike (fires later than the full pre-activation says)
    inp = torch.zeros(16, 2, dtype=torch.float64)
    inp[0, 0], inp[9, 0] = 0.9, -0.9
    inp[12, 1] = 0.9
    phase, _ = one_spike_fire(inp, code)
    full, _ = encode(inp.sum(0), code)
    assert full.tolist() == [0, 1]
    assert phase[0] == 1  # false spike
    assert phase[1] == 12  # output phase t sees input phases <= t + Tw = 13
    currents = inp / 1.3 ** -torch.arange(16, dtype=torch.float64)[:, None]  # un-weight the phase values
    assert torch.equal(phase, membrane_reference(currents, code, Q_in=1.3)[0])


def test_tw_zero_sees_same_phase_input():
    code = PhaseCode(4, 2.0, Tw=0)
    inp = torch.zeros(4, 1)
    inp[2, 0] = 1.0  # arrives at input phase 3 -> earliest output phase 3
    assert one_spike_fire(inp, code)[0].item() == 3


def test_wrong_phase_count_raises():
    with pytest.raises(ValueError, match="expected T_in=16"):
        one_spike_fire(torch.zeros(5, 3), PhaseCode(16, 1.3), T_in=16)
    with pytest.raises(ValueError, match="NaN"):
        one_spike_fire(torch.full((16, 2), float("nan")), PhaseCode(16, 1.3, Tw=2))


def test_multi_spike_full_input_is_binary_expansion():
    torch.manual_seed(0)
    x = torch.rand(1000, dtype=torch.float64) * 1.2
    inp = torch.zeros(8, 1000, dtype=torch.float64)
    inp[0] = x
    planes = multi_spike_fire(inp, T=8, Q=2.0)
    bits, _ = encode_binary(x, 8, signed=False)
    w = (2 ** torch.arange(7, -1, -1)).long()
    assert torch.equal((planes.long() * w[:, None]).sum(0), bits.long())


def test_multi_spike_soft_reset_keeps_residual():
    # 0.75 with Q=2: spikes at phases 1 (0.5) and 2 (0.25), residual 0 afterwards
    planes = multi_spike_fire(torch.tensor([[0.75], [0.0], [0.0], [0.0]]), T=4)
    assert planes[:, 0].tolist() == [True, True, False, False]
    # late input: multi-spike neurons can still correct (unlike one-spike neurons): 0.25 at t=1, 0.5 later
    inp = torch.tensor([[0.25], [0.0], [0.5], [0.0]])
    planes = multi_spike_fire(inp, T=4, Tw=0)
    assert planes[:, 0].tolist() == [False, True, True, True]  # 0.4375: the late 0.5 is only partly recovered
