"""No silent wrong answers: bad calibration data, bad graph input, codes beyond the dtypes, bad phases,
interrupted and concurrent writes, corrupt caches, and saturation reporting (issue 15)."""
import json
import multiprocessing
import os
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch
from conftest import GCN, sbm_graph
from torch import nn

from spikegcn import PhaseCode, convert
from spikegcn.coding import MAX_T, decode, encode, max_T, quantize, saturated_count
from spikegcn.conversion.observers import activation_scale
from spikegcn.energy import LayerStats
from spikegcn.fileio import (
    CorruptFileError,
    atomic_open,
    file_lock,
    load_cached,
    load_json,
    load_torch,
    torch_save,
    write_json,
    write_text,
)
from spikegcn.nn import SpikingConv2d
from spikegcn.nn.encoder import PhaseEncoder
from spikegcn.simulate import DenseOp, run_layer
from spikegcn.spikes import PhaseSpikes
from spikegcn.validate import (
    CalibrationError,
    check_edge_index,
    check_features,
    checks_enabled,
    set_checks_enabled,
    skip_checks,
)


@pytest.fixture(scope="module")
def small_gcn():
    torch.manual_seed(0)
    data = sbm_graph(n=120)
    return data, GCN(16, 8, 4).eval()


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


# ------------------------------------------------------------------------------------------ 1. calibration data
@pytest.mark.parametrize("bad, count", [(float("nan"), "2 NaN and 0 inf"), (float("inf"), "0 NaN and 2 inf")])
def test_gcn_calibration_refuses_nonfinite_features(small_gcn, bad, count):
    data, model = small_gcn
    d = data.clone()
    d.x = d.x.clone()
    d.x[3, 1] = d.x[7, 0] = bad
    with pytest.raises(CalibrationError, match=f"x'? holds {count} value"):
        convert(model, d)


@pytest.mark.parametrize("bad, count", [(float("nan"), "1 NaN and 0 inf"), (float("-inf"), "0 NaN and 1 inf")])
def test_cnn_calibration_refuses_nonfinite_images(bad, count):
    torch.manual_seed(0)
    calib = torch.randn(8, 2, 4, 4)
    calib[5, 1, 2, 3] = bad
    with pytest.raises(CalibrationError, match=f"the images holds {count}"):
        convert(TinyCNN().eval(), calib)


def test_cnn_calibration_names_the_layer_that_overflows():
    torch.manual_seed(0)
    model = TinyCNN().eval()
    with torch.no_grad():
        model.conv.weight[0, 0, 1, 1] = float("inf")
    with pytest.raises(CalibrationError, match=r"the output of relu holds \d+ NaN and \d+ inf"):
        convert(model, torch.randn(8, 2, 4, 4))


def test_activation_scale_names_the_tensor():
    y = torch.ones(10, 3)
    y[2, 1] = float("nan")
    with pytest.raises(CalibrationError, match="the output of layer conv1 holds 1 NaN and 0 inf value.s. of 30"):
        activation_scale(y, signed=False, name="the output of layer conv1")
    assert torch.equal(activation_scale(torch.ones(10, 3) * 2, signed=False), torch.full((3,), 2.0))


def test_input_encoder_calibration_refuses_nan():
    with pytest.raises(CalibrationError, match="input features holds 1 NaN"):
        PhaseEncoder(8).calibrate(torch.tensor([[1.0, float("nan")]]))


# ------------------------------------------------------------------------------------------ 2. files
def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path):
    path = tmp_path / "rec.json"
    write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json(path, {"a": object()})  # not serialisable: nothing is written
    with pytest.raises(RuntimeError):
        with atomic_open(path) as f:
            f.write('{"half": ')
            raise RuntimeError("interrupted")
    assert load_json(path) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.json"]  # no temporary file left behind
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # the mode a plain open() gives


def test_atomic_write_mode_follows_the_umask(tmp_path):
    """The temporary file is created with 0666 and the kernel applies the umask (no umask read-and-restore, which
    races other threads creating files)."""
    old = os.umask(0o027)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_concurrent_reader_never_sees_half_written_json(tmp_path):
    path = tmp_path / "rec.json"
    big = [{"i": i, "v": list(range(100))} for i in range(200)]
    write_json(path, {"n": 0, "rows": big})
    stop, errors = threading.Event(), []

    def read():
        while not stop.is_set():
            try:
                json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(20):
            write_json(path, {"n": n, "rows": big})
    finally:
        stop.set()
        reader.join()
    assert not errors
    assert load_json(path)["n"] == 19


def test_file_lock_serialises_read_modify_write(tmp_path):
    path = tmp_path / "counter.json"
    write_json(path, {"n": 0})

    def bump():
        for _ in range(25):
            with file_lock(path):
                n = load_json(path)["n"]
                write_json(path, {"n": n + 1})

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert load_json(path)["n"] == 100


def _sweep_worker(out: str, Ts: list, queue) -> None:
    from spikegcn.experiments.sweep import Task, run_sweep

    def evaluate(code):
        time.sleep(0.1)  # both processes are busy at once
        return {"mode": "functional", "accuracy": 90.0 + code.T / 100, "loss_points": 0.0}

    def make():
        return Task(meta={"ann_accuracy": 91.0, "dataset": "toy"}, evaluate=evaluate)

    _, computed = run_sweep(out, "toy", {"dataset": "toy"}, [(T, 1.3, T) for T in Ts], make, progress=False)
    queue.put(len(computed))


def test_two_sweep_processes_on_one_file_merge_their_points(tmp_path):
    out = str(tmp_path / "sweep.json")
    ctx = multiprocessing.get_context("fork")  # torch is already imported: no start-up cost
    queue = ctx.Queue()
    procs = [ctx.Process(target=_sweep_worker, args=(out, Ts, queue)) for Ts in (range(4, 12), range(8, 16))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    rec = json.loads(Path(out).read_text())
    assert sorted(p["T"] for p in rec["points"].values()) == list(range(4, 16))  # 12 distinct points, none lost
    assert queue.get() + queue.get() >= 12
    assert not list(tmp_path.glob(".*.tmp"))


def test_corrupt_checkpoint_is_named_without_weights_only_advice(tmp_path):
    path = tmp_path / "model.pt"
    torch_save({"w": torch.ones(3)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated, as by a killed copy
    with pytest.raises(CorruptFileError, match=str(path)) as info:
        load_torch(path)
    assert "weights_only=False" not in str(info.value)
    with pytest.warns(UserWarning, match=f"corrupt cache entry {path} removed"):
        assert load_cached(path, load_torch) is None
    assert not path.exists()


def test_corrupt_sweep_model_cache_is_rebuilt(tmp_path, monkeypatch):
    from spikegcn.experiments.sweep import textgcn_task

    monkeypatch.setenv("SPIKEGCN_CACHE", str(tmp_path))
    first = textgcn_task("demo", train={"epochs": 3}, progress=False)
    (cached,) = (tmp_path / "models").glob("textgcn-demo-*.pt")
    cached.write_bytes(b"\x00" * 100)
    with pytest.warns(UserWarning, match=f"corrupt cached Text GCN model {cached} removed"):
        again = textgcn_task("demo", train={"epochs": 3}, progress=False)
    assert again.meta["ann_accuracy"] == first.meta["ann_accuracy"]  # retrained with the same seed
    load_torch(cached)  # and cached again, readable


def test_corrupt_finetuned_checkpoint_is_removed_and_named(tmp_path, monkeypatch):
    from spikegcn.experiments import cnn as pipeline

    monkeypatch.setenv("SPIKEGCN_CACHE", str(tmp_path))
    ck = pipeline.default_checkpoint_path("resnet20")
    ck.parent.mkdir(parents=True)
    ck.write_bytes(b"PK\x03\x04 truncated")
    monkeypatch.setattr(pipeline, "load_pretrained", lambda name: nn.Linear(1, 1))
    with pytest.warns(UserWarning, match=f"corrupt fine-tuned checkpoint .*{ck.name}"):
        _, desc = pipeline.load_model("resnet20", None)
    assert "published" in desc and not ck.exists()


def test_sweep_file_that_is_not_json_is_named(tmp_path):
    from spikegcn.experiments.sweep import load_sweep

    path = tmp_path / "sweep.json"
    path.write_text('{"kind": "sweep", "poi')
    with pytest.raises(ValueError, match=f"{path}: not valid JSON"):
        load_sweep(path)


# ------------------------------------------------------------------------------------------ 3. graph input
def test_negative_edge_index_is_refused(small_gcn):
    data, model = small_gcn
    snn = convert(model, data)
    ei = data.edge_index.clone()
    ei[1, 5] = -1
    with pytest.raises((IndexError, RuntimeError)):  # the ANN refuses it too
        model(data.x, ei)
    with pytest.raises(ValueError, match=r"edge_index holds 1 negative node index\(es\)"):
        snn(data.x, ei)
    ei[1, 5] = data.num_nodes
    with pytest.raises(ValueError, match=f"node index.es. >= num_nodes = {data.num_nodes}"):
        snn(data.x, ei)


@pytest.mark.parametrize("ei, err, match", [
    (torch.tensor([[0.0, 1.0], [1.0, 2.0]]), TypeError, "integer node indices"),
    (torch.tensor([[0, 1], [1, 2], [2, 0]]), ValueError, r"shape \[2, num_edges\], got \(3, 2\); transpose"),
    (torch.tensor([0, 1, 2]), ValueError, r"shape \[2, num_edges\]"),
    ([[0, 1], [1, 2]], TypeError, "must be a torch.Tensor"),
])
def test_check_edge_index_dtype_and_shape(ei, err, match):
    with pytest.raises(err, match=match):
        check_edge_index(ei, 3)


def test_features_none_and_1d_are_refused(small_gcn):
    data, model = small_gcn
    snn = convert(model, data)
    with pytest.raises(ValueError, match="x=None, but the model was converted with input features"):
        snn(None, data.edge_index)
    with pytest.raises(ValueError, match=r"at least 2-D .* got shape \(120,\); .* x.unsqueeze\(-1\)"):
        snn(data.x[:, 0], data.edge_index)
    with pytest.raises(ValueError, match=r"x holds 1 NaN/inf"):
        check_features(torch.tensor([[1.0, float("inf")]]))
    with pytest.raises(ValueError, match="has 3 channels but the model was converted with 2"):
        check_features(torch.ones(4, 3), num_channels=2)
    check_features(None, allow_none=True)


def test_skip_checks_switch(small_gcn):
    bad = torch.tensor([[0, -1], [1, 0]])
    assert checks_enabled()
    with skip_checks():
        assert not checks_enabled()
        check_edge_index(bad, 3)  # trusted loop: not checked
    with pytest.raises(ValueError):
        check_edge_index(bad, 3)
    set_checks_enabled(False)
    try:
        check_edge_index(bad, 3)
    finally:
        set_checks_enabled(True)
    assert checks_enabled()


# ------------------------------------------------------------------------------------------ 4. long codes
def test_threshold_underflow_is_refused():
    assert max_T(1.3) == 333
    with pytest.raises(ValueError, match=r"T=397, Q=1.3.*underflows float32.*use T <= 333"):
        PhaseCode(397, 1.3)
    with pytest.raises(ValueError, match="T <= 333"):
        PhaseCode(16, 1.3).replace(T=500)
    with pytest.raises(ValueError, match="underflows float16"):
        PhaseCode(100, 1.3).thresholds(torch.float16)


@pytest.mark.parametrize("Q", [1.05, 1.3, 1.9])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_silent_neurons_stay_silent_at_the_longest_accepted_code(Q, dtype):
    code = PhaseCode(max_T(Q), Q)
    x = torch.tensor([0.0, -1.0, 1e-45, code.underflow_bound * 1.01, 1.0], dtype=dtype)
    phase, _ = encode(x, code)
    assert phase.tolist()[:3] == [0, 0, 0] and phase[3] == code.T and phase[4] == 1
    assert bool((code.thresholds(dtype) > 0).all())
    assert quantize(torch.zeros(70_000, dtype=dtype), code).abs().sum() == 0  # the compiled size too


def test_T_beyond_the_phase_dtype_is_refused():
    with pytest.raises(ValueError, match=f"exceeds the longest supported window T = {MAX_T}"):
        PhaseCode(MAX_T + 1, 1.001)
    code = PhaseCode(MAX_T, 1.002)
    assert code.phase_dtype == torch.int16
    phase, _ = encode(torch.tensor([1e-27, 0.5]), code)
    assert 0 < int(phase[0]) <= MAX_T and phase.dtype == torch.int16


# ------------------------------------------------------------------------------------------ 5. phases to decode
@pytest.mark.parametrize("n", [10, 70_010])  # torch path and compiled (>= 65,536 elements; a 10-element tail) path
@pytest.mark.parametrize("bad", [17, 100, -1])
@pytest.mark.parametrize("at", ["middle", "last"])  # the compiled decoder's vector body and its scalar tail
def test_decode_refuses_phases_outside_the_window(n, bad, at):
    code = PhaseCode(16, 1.3)
    phase = torch.randint(0, 17, (n,), dtype=torch.int8)
    i = n // 2 if at == "middle" else n - 1
    phase[i] = bad
    with pytest.raises(ValueError, match=r"decode: 1 fire phase\(s\) outside 0..T = 0..16"):
        decode(phase, code)
    spikes = PhaseSpikes(phase=phase.view(-1, 10), code=code, scale=torch.ones(10))
    with pytest.raises(ValueError, match="outside 0..T"):
        spikes.values()
    conv = SpikingConv2d(10, 2, 1, code=code)  # a CNN layer's input decode (one compiled pass, checked in it)
    with pytest.raises(ValueError, match="outside 0..T"):
        conv(PhaseSpikes(phase=phase.view(-1, 10, 1, 1), code=code))
    phase[i] = 16
    assert torch.equal(decode(phase, code), code.values()[phase.long()])


# ------------------------------------------------------------------------------------------ 6. saturation
def test_saturation_is_counted_in_both_modes():
    torch.manual_seed(0)
    code = PhaseCode(8, 1.3)
    inp = PhaseSpikes(phase=torch.randint(0, 9, (50, 6), dtype=torch.int8), code=code, scale=torch.ones(6))
    op = DenseOp(torch.randn(5, 6))
    z = inp.values() @ op.weight.t()
    scale = z.abs().amax(0) * 0.7  # lambda below the maximum: the top 30 % of the range clips
    want = int((z / scale > 1).sum())
    assert want > 0
    for mode, c in (("functional", code), ("exact", code.replace(Tw=2))):
        out, st = run_layer(inp, op, c, None, scale, mode=mode)
        assert st.saturated_neurons == want, mode
        assert st.saturated == pytest.approx(want / 250)
        assert st.as_dict()["saturated"] == pytest.approx(want / 250)
    assert LayerStats("x", 0, 0, 0, 0).saturated is None  # not measured
    assert LayerStats("x", 0, 0, 0, 0, out_neurons=10, saturated_neurons=0.0).saturated == 0.0


def test_converted_models_report_saturation(small_gcn):
    data, model = small_gcn
    snn = convert(model, data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        snn(data.x, data.edge_index)  # the calibration data itself: the input does not saturate
    assert snn.input_encoder.saturated == 0.0
    hidden = [s for s in snn.layer_stats() if s.out_neurons]  # the output layer does not clip: None
    assert len(hidden) == 3 and all(s.saturated < 0.05 for s in hidden)
    with pytest.warns(UserWarning, match="input features above the calibrated maximum"):
        snn(data.x * 3, data.edge_index)
    assert snn.input_encoder.saturated_inputs == saturated_count(data.x * 3 / snn.input_encoder.scale, True) > 0
    assert max(s.saturated for s in snn.layer_stats() if s.out_neurons) > 0.05  # hidden layers clip too

    torch.manual_seed(0)
    calib = torch.randn(16, 2, 4, 4)
    cnn = convert(TinyCNN().eval(), calib, mode="functional")
    cnn(calib)
    assert cnn.layer_stats()[0].saturated == 0.0
    with pytest.warns(UserWarning):
        cnn.run(calib * 4, batch_size=8)
    sat = cnn.layer_stats()[0]
    assert 0 < sat.saturated < 1 and sat.saturated_neurons == int(sat.saturated_neurons)
    cnn.set_mode("exact").set_code(PhaseCode(16, 1.3, Tw=3))
    with pytest.warns(UserWarning):
        cnn(calib * 4)
    assert cnn.layer_stats()[0].saturated > 0
