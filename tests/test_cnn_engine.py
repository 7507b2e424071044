"""CNN simulation engine: the compiled exact-mode kernel (one convolution + late spikes) against the phase-by-phase
path and a brute-force reference, batch invariance of the decoder, and device-true runs (meta default device)."""
from __future__ import annotations

import pytest
import torch
from test_convert_cnn import _brute_force, _random_phase_spikes, _randomize_bn
from torch import nn

from spikegcn import PhaseCode, convert
from spikegcn.kernels import conv_cpu, fused_cpu
from spikegcn.nn import SpikingAvgPool2d, SpikingConv2d, SpikingFC
from spikegcn.spikes import PhaseSpikes
from spikegcn.vision import CifarResNet, vgg_cifar

kernel = pytest.mark.skipif(fused_cpu.load() is None or not hasattr(fused_cpu.load(), "conv_exact"),
                            reason="compiled CPU kernels not built (spikegcn build-kernels)")


def _spy(monkeypatch) -> list[bool]:
    """Record, per exact-mode layer call, whether the compiled kernel served it."""
    served, real = [], conv_cpu.fire_late

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        served.append(out is not None)
        return out

    monkeypatch.setattr(conv_cpu, "fire_late", spy)
    return served


def _stepped(layer, *inputs, monkeypatch):
    """The layer's output through the phase-by-phase path (compiled kernel switched off)."""
    with monkeypatch.context() as m:
        m.setattr(fused_cpu, "load", lambda: None)
        return layer(*inputs)


def _layers(code):
    torch.manual_seed(0)
    conv = SpikingConv2d(3, 5, 3, stride=2, padding=1, dilation=1, code=code)
    dil = SpikingConv2d(3, 4, 3, padding=2, dilation=2, code=code)
    fc = SpikingFC(3 * 6 * 6, 7, code=code)
    pool = SpikingAvgPool2d(3, 2, code=code)
    with torch.no_grad():
        pool.weight.uniform_(0.8, 1.6)
    return {"conv": conv, "dilated": dil, "fc": fc, "avgpool": pool}


@kernel
@pytest.mark.parametrize("tw", [0, 3, 7])
@pytest.mark.parametrize("name", ["conv", "dilated", "fc", "avgpool"])
def test_kernel_equals_brute_force(name, tw, monkeypatch):
    code = PhaseCode(10, 1.3, Tw=tw)
    layer = _layers(code)[name].double()
    x = _random_phase_spikes((4, 3, 6, 6), code, start=0, seed=1)
    served = _spy(monkeypatch)
    out = layer(x)
    assert served == [True]  # the compiled kernel ran this layer
    stats = [s.as_dict() for s in layer.stats]
    ref = _brute_force(layer, [x], code)
    assert torch.equal(out.phase.long(), ref.reshape(out.phase.shape))
    if out.phase.dim() == 4:  # the kernel's spike count per output position, kept for the next layer
        assert torch.equal(out.kept_position_counts(), (out.phase != 0).sum((0, 1)))
    step = _stepped(layer, x, monkeypatch=monkeypatch)
    assert torch.equal(out.phase, step.phase)
    assert stats == [s.as_dict() for s in layer.stats]  # saturation count included


@kernel
def test_kernel_adds_the_bias_and_refuses_a_non_finite_one(monkeypatch):
    """The compiled kernel adds the bias to the early potentials as it reads them (the torch path adds it in a pass
    of its own): the same phases as the phase-by-phase path; a NaN bias raises instead of firing silently."""
    code = PhaseCode(10, 1.3, Tw=3)
    layer = _layers(code)["conv"]
    with torch.no_grad():
        layer.bias.uniform_(-0.3, 0.3)
    x = _random_phase_spikes((4, 3, 6, 6), code, start=0, seed=4)
    served = _spy(monkeypatch)
    out = layer(x)
    assert served == [True] and torch.equal(out.phase, _stepped(layer, x, monkeypatch=monkeypatch).phase)
    with torch.no_grad():
        layer.bias[1] = float("nan")
    with pytest.raises(ValueError, match="NaN/inf"):
        layer(x)


@kernel
def test_short_output_code_counts_saturation_as_stepped(monkeypatch):
    """An output code shorter than the input's (T_out + Tw < T_in): input phases past T_out + Tw reach no output
    phase, so neither the fire phases nor the saturation count (the final potential) may include them; the kernel
    matches the phase-by-phase path, which differs from the full potential's count for some layer."""
    x = _random_phase_spikes((4, 3, 6, 6), PhaseCode(10, 1.3), start=0, seed=2)
    differs = []
    for name, layer in _layers(PhaseCode(6, 1.3, Tw=1)).items():
        layer = layer.double()
        with torch.no_grad():
            layer.weight.mul_(4)  # potentials around 1: late inputs decide whether some saturate
        served = _spy(monkeypatch)
        out = layer(x)
        assert served == [True]
        stats = [s.as_dict() for s in layer.stats]
        step = _stepped(layer, x, monkeypatch=monkeypatch)
        assert torch.equal(out.phase, step.phase) and stats == [s.as_dict() for s in layer.stats], name
        layer.set_mode("functional")  # the whole input: what the kernel counted before
        layer(x)
        differs.append(layer.stats[0].saturated_neurons != stats[0]["saturated_neurons"])
    assert any(differs)


NETS = {
    "resnet_option_a": lambda: CifarResNet((1, 1, 1), num_classes=5, in_channels=2, width=4),
    "resnet_option_b": lambda: CifarResNet((1, 1, 1), num_classes=5, in_channels=2, width=4, option="B"),
    "vgg_hidden_linear": lambda: vgg_cifar((4, "M", 8, "M"), num_classes=5, in_channels=2, in_size=8, hidden=(16,)),
}


@kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(NETS))
def test_converted_net_kernel_equals_stepped(name, dtype, monkeypatch):
    torch.manual_seed(0)
    model = _randomize_bn(NETS[name]()).to(dtype)
    calib, x = torch.randn(64, 2, 8, 8, dtype=dtype), torch.randn(16, 2, 8, 8, dtype=dtype)
    for tw in (0, 4, 8):
        snn = convert(model, calib, PhaseCode(16, 1.3, Tw=tw), mode="exact")
        served = _spy(monkeypatch)
        out = snn(x)
        assert served and all(served)  # every hidden layer ran on the kernel
        monkeypatch.undo()
        stats = [s.as_dict() for s in snn.layer_stats()]
        with monkeypatch.context() as m:
            m.setattr(fused_cpu, "load", lambda: None)
            ref = snn(x)
        assert torch.equal(out.argmax(1), ref.argmax(1))
        assert torch.allclose(out, ref, rtol=1e-4 if dtype == torch.float32 else 1e-9, atol=1e-5)
        assert stats == [s.as_dict() for s in snn.layer_stats()]


def test_functional_cnn_batch_equals_one_at_a_time():
    """Regression: the compiled decoder scaled along the last axis, so a [C, 1, 1] channel scale with C == W was
    applied per column (a Conv2d(3, 32) + ReLU on 32 x 32 images differed by about 1 between a batch and single
    images)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU())
    snn = convert(model, torch.randn(8, 3, 32, 32), PhaseCode(16, 1.3), mode="functional")
    x = torch.randn(2, 3, 32, 32)
    batch = snn(x)
    assert torch.equal(batch, torch.cat([snn(x[:1]), snn(x[1:])]))
    spikes = PhaseSpikes(phase=torch.randint(0, 17, (2, 32, 32, 32), dtype=torch.int8), code=PhaseCode(16, 1.3),
                         scale=torch.rand(32, 1, 1) + 0.5)
    assert torch.equal(spikes.values(), spikes.normalized() * spikes.scale)


@pytest.mark.parametrize("mode,tw", [("functional", 16), ("exact", 16), ("exact", 4)])
def test_meta_default_device_run_equals_normal_run(mode, tw):
    """Every tensor the CNN path creates takes its device from its inputs or buffers."""
    torch.manual_seed(0)
    model = _randomize_bn(CifarResNet((1, 1, 1), num_classes=5, in_channels=2, width=4))
    calib, x = torch.randn(32, 2, 8, 8), torch.randn(8, 2, 8, 8)
    snn = convert(model, calib, PhaseCode(16, 1.3, Tw=tw), mode=mode)
    out = snn(x)
    fresh = convert(model, calib, PhaseCode(16, 1.3, Tw=tw), mode=mode)  # no cached fan-out from a CPU run
    with torch.device("meta"):
        meta, meta_fresh = snn(x), fresh(x)
    assert meta.device.type == "cpu" and torch.equal(meta, out) and torch.equal(meta_fresh, out)


@pytest.mark.parametrize("hw,stride", [(8, 1), (32, 1), (9, 2)])
def test_input_statistics_equal_per_position_counts(hw, stride):
    """The border-corrected spike x fan-out sum equals the per-position formula exactly."""
    code = PhaseCode(8, 1.3)
    layer = SpikingConv2d(3, 5, 3, stride=stride, padding=1, code=code)
    x = _random_phase_spikes((4, 3, hw, hw), code, start=0, seed=3)
    layer(x)
    per_pos = (x.phase != 0).sum(0).double()
    fan = layer.fanout(0, x.phase.shape[1:]).double()
    assert layer.stats[0].additions == float((per_pos * fan).sum())
    assert layer.stats[0].in_spikes == float(per_pos.sum())


def test_cnn_and_graph_layers_run_on_one_engine(monkeypatch):
    """Every CNN neuron layer (conv, fc, avg pool, residual join) is its synaptic operator fed to
    simulate.run_layer, the loop the graph layers use: no second simulator."""
    from spikegcn import simulate
    from spikegcn.nn import conv as conv_module

    ops, real = [], simulate.run_layer

    def spy(inp, op, *args, **kwargs):
        ops.append(type(op).__name__)
        return real(inp, op, *args, **kwargs)

    monkeypatch.setattr(conv_module, "run_layer", spy)
    torch.manual_seed(0)
    model = _randomize_bn(CifarResNet((1, 1, 1), num_classes=5, in_channels=2, width=4))
    snn = convert(model, torch.randn(32, 2, 8, 8), PhaseCode(16, 1.3, Tw=4), mode="exact")
    snn(torch.randn(4, 2, 8, 8))
    assert len(ops) == len(snn.spiking_layers()) and set(ops) == {"LayerSynapses"}


def test_residual_streams_keep_their_own_timing():
    """A residual join sees the block input (opened Tw phases before the hidden layer) Tw virtual phases ahead:
    its Streams carry offsets [Tw, 0] and the neuron waits 2 Tw; at Tw = 0 both streams are seen phase-aligned."""
    from spikegcn.operators import Streams

    code = PhaseCode(8, 1.3, Tw=2)
    h = _random_phase_spikes((2, 4, 5, 5), code, start=4, seed=5)
    x = _random_phase_spikes((2, 4, 5, 5), code, start=2, seed=6)
    s = Streams([h, x], [h.start - 2, x.start - 2])
    assert s.offsets == (2, 0) and s.T_in == 10
    with pytest.raises(ValueError, match="one non-negative offset per stream"):
        Streams([h, x], [0])


@kernel
@pytest.mark.parametrize("kind", ["phase", "phase_signed", "binary", "binary_signed"])
@pytest.mark.parametrize("flat", [False, True])
@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
def test_compiled_late_lists_equal_torch_reference(kind, flat, isa, monkeypatch):
    """The compiled builders read NCHW spikes in place and list the late spikes in the torch path's order
    (position, channel, phase), with the same virtual phases and values, for every instruction set's late masks
    (capped by SPIKEGCN_CPU_ISA; runs of 90 positions and of 450 channels: full vectors and tails)."""
    monkeypatch.setenv("SPIKEGCN_CPU_ISA", isa)
    from spikegcn.coding import encode_binary
    from spikegcn.spikes import BinarySpikes

    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 5, 9, 10, generator=g)
    signed = kind.endswith("signed")
    if kind.startswith("phase"):
        code = PhaseCode(12, 1.3)
        from spikegcn.coding import encode

        phase, sign = encode(x, code, signed=signed)
        spikes = PhaseSpikes(phase=phase, code=code, sign=sign)
    else:
        bits, sign = encode_binary(x.clamp(-1, 1) if signed else x.abs().clamp(max=1), 12, signed=signed)
        spikes = BinarySpikes(bits=bits, T=12, sign=sign)
    for lo, offset in [(0, 0), (4, 2), (11, 1)]:
        got = conv_cpu.late_spikes(spikes, lo, offset, torch.float64, flat)
        data = spikes.phase if isinstance(spikes, PhaseSpikes) else spikes.bits
        nchw = conv_cpu._as_map(data, flat).contiguous()
        sgn = conv_cpu._as_map(spikes.sign, flat).contiguous() if spikes.sign is not None else None
        ref = conv_cpu._late_spikes_torch(spikes, nchw, sgn, lo, offset, torch.float64)
        for a, b in zip(got, ref):
            assert a.dtype == b.dtype and torch.equal(a, b)


@kernel
@pytest.mark.parametrize("bad", [13, 100, -3])
def test_compiled_late_lists_refuse_phases_past_the_table(bad):
    """A late fire phase past the code's value table (or a negative one below a negative bound) is refused by name,
    not read outside the table."""
    code = PhaseCode(12, 1.3)
    phase = torch.randint(0, 13, (2, 3, 9, 10), dtype=torch.int8)
    phase[1, 2, 4, 5] = bad
    with pytest.raises(RuntimeError, match="late_list: 1 late fire phase"):
        conv_cpu.late_spikes(PhaseSpikes(phase=phase, code=code), -5 if bad < 0 else 4, 0, torch.float32)


@pytest.mark.parametrize("tw", [16, 4])
def test_empty_batch_gives_empty_logits(tw):
    torch.manual_seed(0)
    model = _randomize_bn(CifarResNet((1, 1, 1), num_classes=5, in_channels=2, width=4))
    snn = convert(model, torch.randn(16, 2, 8, 8), PhaseCode(16, 1.3, Tw=tw), mode="exact")
    out = snn(torch.randn(0, 2, 8, 8))
    assert out.shape == (0, 5)


def _encode_join_reference(z, thr, signed, bias, shortcut, table):
    """The torch path's order of operations: z + shortcut values x weight, + bias, encoded, decoded."""
    from spikegcn.coding import encode_counted

    z = z.clone()
    if shortcut is not None:
        sv, w, front, (sh, sw) = shortcut
        sub = sv[:, :, ::sh, ::sw]
        sub = torch.nn.functional.pad(sub, (0, 0, 0, 0, front, z.shape[1] - front - sv.shape[1]))
        z.add_(sub * w.view(-1, 1, 1))
    if bias is not None:
        z.add_(bias.view(-1, *([1] * (z.dim() - 2))))
    fin = torch.isfinite(z)
    code = PhaseCode(thr.numel(), 1.3)
    phase, sign, sat, fired = encode_counted(torch.where(fin, z, torch.zeros(())), code, signed=signed, check=False)
    values = table[phase.long()] * (sign.float() if sign is not None else 1.0)
    return phase, sign, int((~fin).sum()), sat, fired, values


@pytest.mark.skipif(fused_cpu.load() is None or not hasattr(fused_cpu.load(), "encode_join"),
                    reason="compiled CPU kernels not built (spikegcn build-kernels)")
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("case", ["plain", "bias", "identity", "option_a", "option_a_wide", "2d", "short_rows",
                                  "rows_64", "threaded"])
def test_encode_join_equals_torch_order_of_operations(case, signed):
    """The fused closed-form pass (shortcut x weight, + bias, encode, decode in place) gives the torch path's
    phases, signs, counts, spikes per position and values bit for bit: rows longer and shorter than its
    256-element blocks, a strided option-A shortcut with channels padded on both sides, and [N, F] outputs."""
    code = PhaseCode(16, 1.3)
    thr, table = code.thresholds(torch.float32).flip(0), code.values(torch.float32)
    g = torch.Generator().manual_seed(3)
    shape = {"2d": (37, 300), "option_a": (3, 8, 5, 9), "short_rows": (5, 7, 5, 5),  # 25 positions: flat blocks
             "rows_64": (5, 7, 8, 8), "option_a_wide": (2, 4, 20, 30),  # 600 positions: lines across blocks
             "threaded": (4, 16, 33, 31)}.get(case, (3, 6, 19, 23))  # threaded: past the kernel's serial size
    z = torch.randn(*shape, generator=g) * 0.6
    z.view(-1)[5] = float("nan")
    bias = torch.randn(shape[1], generator=g) * 0.2 if case != "plain" else None
    shortcut = None
    if case == "identity":
        shortcut = (torch.rand(*shape, generator=g), torch.randn(shape[1], generator=g), 0, (1, 1))
    elif case == "option_a":  # 3 input channels into 8 (2 in front), 10 x 17 subsampled by 2 -> 5 x 9
        shortcut = (torch.rand(3, 3, 10, 17, generator=g), torch.randn(8, generator=g), 2, (2, 2))
    elif case == "option_a_wide":  # 2 input channels into 4 (1 in front), 40 x 59 subsampled by 2 -> 20 x 30
        shortcut = (torch.rand(2, 2, 40, 59, generator=g), torch.randn(4, generator=g), 1, (2, 2))
    ref = _encode_join_reference(z, thr, signed, bias, shortcut, table)
    zz = z.clone()
    phase, sign, bad, sat, fired, at = fused_cpu.encode_join(zz, thr, signed, bias=bias, shortcut=shortcut,
                                                             table=table, count_positions=True)
    assert torch.equal(phase, ref[0]) and (sign is None) == (not signed)
    if z.dim() >= 3:  # the spikes per position, counted in the same pass
        assert torch.equal(at, (ref[0] != 0).sum((0, 1)))
    else:
        assert at is None
    assert sign is None or torch.equal(sign, ref[1])
    assert (bad, sat, fired) == (1, ref[3], ref[4])
    assert torch.equal(zz, ref[5])  # the output's decoded values, written over the potential
    untouched = z.clone()
    fused_cpu.encode_join(untouched, thr, signed, bias=bias, shortcut=shortcut)  # no table: z is kept
    assert torch.equal(untouched.nan_to_num(), z.nan_to_num())


def _closed_form_spy(monkeypatch, enabled: bool) -> list[bool]:
    from spikegcn.nn.conv import LayerSynapses

    served, real = [], LayerSynapses.fire_closed_form

    def spy(self, *args):
        out = real(self, *args) if enabled else None
        served.append(out is not None)
        return out

    monkeypatch.setattr(LayerSynapses, "fire_closed_form", spy)
    return served


@kernel
@pytest.mark.parametrize("mode,tw", [("functional", 16), ("exact", 16), ("exact", 6)])
@pytest.mark.parametrize("name", list(NETS))
def test_fused_closed_form_equals_torch_path(name, mode, tw, monkeypatch):
    """The CNN layers' fused closed-form pass (the residual join's shortcut and the bias added in the encoder's
    pass, the output decoded there for the next layer) gives the torch path's logits and statistics bit for bit,
    and serves every hidden layer of functional mode."""
    torch.manual_seed(0)
    model = _randomize_bn(NETS[name]())
    calib, x = torch.randn(64, 2, 8, 8), torch.randn(16, 2, 8, 8)
    snn = convert(model, calib, PhaseCode(16, 1.3, Tw=tw), mode=mode)
    runs = {}
    for enabled in (True, False):
        with monkeypatch.context() as m:
            served = _closed_form_spy(m, enabled)
            out = snn(x)
        runs[enabled] = (out, [s.as_dict() for s in snn.layer_stats()], served)
    assert torch.equal(runs[True][0], runs[False][0]) and runs[True][1] == runs[False][1]
    if tw == 16:
        assert runs[True][2] and all(runs[True][2])


def _two_functional_layers():
    """Two functional CNN layers (3 -> 6 -> 4 channels, 3 x 3) and a random one-spike input for the first."""
    code = PhaseCode(16, 1.3)
    torch.manual_seed(0)
    first, second = (SpikingConv2d(c_in, c_out, 3, padding=1, code=code, mode="functional")
                     for c_in, c_out in ((3, 6), (6, 4)))
    return first, second, _random_phase_spikes((4, 3, 9, 9), code, start=0, seed=2)


@kernel
def test_kept_values_follow_the_phases():
    """A CNN layer's output keeps its decoded values for the next layer only while its phases are unchanged, and
    not under inference mode; the next layer's result is the same either way."""
    first, second, x = _two_functional_layers()
    h = first(x)
    kept = h.kept_decoded(torch.float32)
    assert kept is not None and torch.equal(kept, PhaseSpikes(h.phase, h.code, h.scale).normalized())
    assert h.kept_decoded(torch.float64) is None
    ref = second(PhaseSpikes(h.phase.clone(), h.code, h.scale, start=h.start))  # decoded from its phases
    assert torch.equal(second(h).phase, ref.phase)
    h.phase[0, 0, 0, 0] = 0 if h.phase[0, 0, 0, 0] else 3  # in place: the kept values no longer hold
    assert h.kept_decoded(torch.float32) is None
    for change in ("replace phase", "change values", "replace code"):
        g = first(x)
        assert g.kept_decoded(torch.float32) is not None
        if change == "replace phase":
            g.phase = g.phase.clone()
        elif change == "change values":
            g.kept_decoded(torch.float32).mul_(2)
        else:
            g.code = PhaseCode(16, 1.5)
        assert g.kept_decoded(torch.float32) is None, change
    with torch.inference_mode():
        assert first(x).kept_decoded(torch.float32) is None
    g2 = first(x)
    with torch.inference_mode():
        g2.phase = g2.phase + 0  # an inference tensor (no version counter) replaces the phases
    assert g2.kept_decoded(torch.float32) is None


@kernel
def test_kept_position_counts_follow_the_phases():
    """A CNN layer's output keeps the spikes per position its firing pass counted (the next layer's addition
    count) only while its phases are the ones counted, and not under inference mode; the next layer's statistics
    are the same either way."""
    first, second, x = _two_functional_layers()
    h = first(x)
    kept = h.kept_position_counts()
    assert kept is not None and torch.equal(kept, (h.phase != 0).sum((0, 1)))
    second(h)
    with_kept = second.stats[0].as_dict()
    second(PhaseSpikes(h.phase.clone(), h.code, h.scale, start=h.start))  # counted from its phases
    assert second.stats[0].as_dict() == with_kept
    h.phase[0, 0, 0, 0] = 0 if h.phase[0, 0, 0, 0] else 3  # in place: the counts no longer hold
    assert h.kept_position_counts() is None
    second(h)
    assert second.stats[0].in_spikes == float((h.phase != 0).sum())
    g = first(x)
    g.phase = g.phase.clone()
    assert g.kept_position_counts() is None
    g = first(x)
    g.kept_position_counts().add_(1)  # the counts themselves changed in place
    assert g.kept_position_counts() is None
    with torch.inference_mode():
        assert first(x).kept_position_counts() is None


@kernel
@pytest.mark.parametrize("mode,tw", [("functional", 16), ("exact", 6)])
def test_channels_last_input_equals_contiguous(mode, tw):
    """A channels-last batch (and so channels-last convolution outputs) gives the contiguous batch's logits: the
    closed-form pass keeps the tensor it wrote the next layer's values into."""
    torch.manual_seed(0)
    model = _randomize_bn(NETS["resnet_option_a"]())
    snn = convert(model, torch.randn(64, 2, 8, 8), PhaseCode(16, 1.3, Tw=tw), mode=mode)
    x = torch.randn(16, 2, 8, 8)
    assert torch.equal(snn(x.to(memory_format=torch.channels_last)), snn(x))
