import pytest

from spikegcn.energy import FP32, INT8, INT8_MULT_ONLY, EnergyCosts, LayerStats, energy_report, latency


def mr_like_layers():
    # MR-sized Text GCN (docs/method.md, section 11.3): N = 29,426, nnz = 1,927,676, d = 200, C = 2
    N, nnz, d, C = 29426, 1927676, 200, 2
    return [
        LayerStats("mp1", macs=N * d, in_neurons=N, in_spikes=N, additions=N * d, out_neurons=N * d,
                   out_spikes=0.9 * N * d),
        LayerStats("agg1", macs=nnz * d, in_neurons=N * d, in_spikes=0.9 * N * d, additions=0.9 * nnz * d,
                   out_neurons=N * d, out_spikes=0.5 * N * d),
        LayerStats("mp2", macs=N * d * C, in_neurons=N * d, in_spikes=0.5 * N * d, additions=0.5 * N * d * C,
                   out_neurons=N * C, out_spikes=N * C),
        LayerStats("agg2", macs=nnz * C, in_neurons=N * C, in_spikes=N * C, additions=nnz * C),
    ]


def test_single_layer_ratio_is_mac_over_add_cost():
    layer = LayerStats("fc", macs=1000, in_neurons=10, in_spikes=10, additions=1000)
    rep = energy_report([layer], FP32)
    assert rep["ratio"] == pytest.approx(4.6 / 0.9)
    assert rep["ratio_approx"] == pytest.approx(4.6 / 0.9)
    assert layer.s == 1.0


def test_int8_ratio_is_fp32_times_1_5_and_mult_only_1_304():
    layers = mr_like_layers()
    fp32 = energy_report(layers, FP32)["ratio"]
    assert energy_report(layers, INT8)["ratio"] / fp32 == pytest.approx(1.5, abs=1e-3)
    assert energy_report(layers, INT8_MULT_ONLY)["ratio"] / fp32 == pytest.approx(1.3043, abs=1e-3)


def test_report_breakdown_and_counts():
    layers = mr_like_layers()
    rep = energy_report(layers)
    macs = sum(l.macs for l in layers)
    assert rep["macs"] == macs
    assert rep["energy_ann_pj"] == pytest.approx(4.6 * macs)
    assert rep["energy_snn_pj"] == pytest.approx(0.9 * sum(l.additions for l in layers))
    assert [l["name"] for l in rep["layers"]] == ["mp1", "agg1", "mp2", "agg2"]
    agg1 = rep["layers"][1]
    assert agg1["s"] == pytest.approx(0.9) and agg1["approx_additions"] == pytest.approx(0.9 * 1927676 * 200)
    assert agg1["spikes_per_neuron"] == pytest.approx(0.5)
    # AGG1 dominates, so the ratio is about 5.11 / 0.9
    assert rep["ratio"] == pytest.approx(5.11 / 0.9, rel=0.05)
    assert "memory traffic" in rep["not_counted"]


def test_approx_differs_from_exact_with_nonuniform_fanout():
    # two pre-synaptic neurons, fan-out 10 and 1, only the first one spikes
    layer = LayerStats("agg", macs=11, in_neurons=2, in_spikes=1, additions=10)
    rep = energy_report([layer])
    assert rep["additions"] == 10 and rep["approx_additions"] == 5.5


def test_energy_costs_validation():
    with pytest.raises(ValueError, match="positive"):
        EnergyCosts(0, 0.9)
    assert INT8.e_mac == 0.23 and INT8.e_add == 0.03


def test_latency():
    # single input: (L-1) Tw + T
    assert latency(T=16, Tw=16, L=4) == 3 * 16 + 16
    assert latency(T=16, Tw=4, L=4) == 3 * 4 + 16
    # pipelined: N T + (L-1) Tw; per input -> T
    assert latency(T=16, Tw=16, L=4, N=10) == 10 * 16 + 3 * 16
    assert latency(16, 16, 4, N=10_000) / 10_000 == pytest.approx(16, rel=1e-2)
    assert latency(T=16, Tw=8, L=4, N=10, double_buffer=False) == 9 * 24 + 3 * 8 + 16
    with pytest.raises(ValueError, match="N must be an integer >= 1"):
        latency(16, 16, 4, N=0)
    with pytest.raises(ValueError, match="Tw must be an integer >= 0"):
        latency(16, -1, 4)
