"""Analysis commands: `spikegcn mape`, `spikegcn sweep` (grids, resuming), `spikegcn report` (fixture records)."""
import json
import re
import shutil
from pathlib import Path

import pytest

from spikegcn.cli import main
from spikegcn.experiments import sweep as sweep_mod
from spikegcn.experiments.grid import GridError, parse_grid
from spikegcn.experiments.report import build_report, load_results

FIX = Path(__file__).parent / "fixtures" / "results"


@pytest.fixture
def results(tmp_path):
    """A writable copy of the fixture results folder."""
    dst = tmp_path / "results"
    shutil.copytree(FIX, dst)
    return dst


# ------------------------------------------------------------------------------------------------ report
def test_report_from_fixture_records(tmp_path):
    out = build_report(FIX, tmp_path / "rep" / "report.md")
    md = out.read_text()
    # the CNN-vs-GCN table: one row per record, with the record's file, seed, T, Q, Tw next to the numbers
    assert ("| GCN | Text GCN · R8 | `textgcn/R8_T16_Q1.3_Tw16_seed0.json` | 0 | 16 | 1.3 | 16 | exact | 97.03 | "
            "97.17 | -0.14 | exact = functional |") in md
    assert ("| CNN | LeNet-5 · MNIST | `cnn/lenet5_T16_Q1.3_Tw16_seed0.json` | 0 | 16 | 1.3 | 16 | functional | "
            "99.00 | 98.90 | 0.10 | 10 test images |") in md
    assert ("| CNN | ResNet-20 · CIFAR-10 JPEG | `cnn_tables.json › models['resnet20']` | – | 16 | 1.3 | 16 | "
            "functional | 91.50 | 91.20 | 0.30 |") in md
    assert "| Text GCN · R8 | `textgcn_table5.json › runs['R8/0']` |" in md
    # a network known only from a sweep gets the sweep's point nearest T = 16, Q = 1.3, Tw = T
    assert "`sweep_textgcn_demo.json › points['T16_Q1.3_Tw16']`" in md
    # cost table: energy from the record, L = neuron layers (shortcut entries excluded), latency(T, Tw, L, N)
    lenet = json.loads((FIX / "cnn" / "lenet5_T16_Q1.3_Tw16_seed0.json").read_text())["snn"]["functional"]
    row = next(l for l in md.splitlines() if l.startswith("| LeNet-5 · MNIST | `cnn/"))
    assert f"| {lenet['energy_fp32']['ratio']:.2f} | {lenet['energy_int8']:.2f} | 5 | 80 | 1664 (16.64) |" in row
    assert "conv1 0.412, conv2 0.221, fc1 0.305, fc2 0.270" in row
    row = next(l for l in md.splitlines() if l.startswith("| ResNet-20 · CIFAR-10 JPEG | `cnn_tables"))
    assert "| 5 | 80 | 1664 (16.64) |" in row  # 6 entries, one a shortcut
    row = next(l for l in md.splitlines() if l.startswith("| Text GCN · R8 | `textgcn/R8"))
    assert "| 5.46 | 8.19 | 4 | 64 | 1648 (16.48) |" in row
    # MAPE optima (coarse fixture grid), loss grid, best settings
    assert "| 16 | 1.3 | 8.43 | 1.1 … 2 (10 values) | `mape.json` (μ = 0, σ = 1) |" in md
    assert "| 24 | 1.2 | 6.10 |" in md
    assert "| 8 | 5.98 | 2.10 | 0.00 |" in md  # Table V sweep fixture, T = 8 at Q = 1.2, 1.3, 2
    assert "- T = 16: lowest loss -0.14 pp at Q = 1.3; Eq. 5 optimum Q = 1.3 (`mape.json`)." in md
    # Table VIII: sweep points with Tw < T and the CNN tables' Tw sweep
    assert ("| Text GCN · demo | `sweep_textgcn_demo.json` | 0 | 16 | 1.3 | 95.83 | 95.83 | 95.83 | – | 95.83 | "
            "95.83 |") in md
    assert ("| ResNet-20 · CIFAR-10 JPEG | `cnn_tables.json › models['resnet20'].tw_sweep` | – | 16 | 1.3 | – | "
            "85.50 | 90.50 | 91.00 | 91.20 | 91.50 | sweep on 200 of 1000 test images; ANN on all |") in md
    # Fig. 7: the stored activation sample, errors with and without the shift; the CNN ablation
    assert "40 positive values sampled from 127400 activations" in md
    assert "| round-off (threshold shift) |" in md and "| floor (no shift) |" in md
    assert "| 91.20 | 60.25 | 91.50 |" in md
    # what is missing is named with the command that produces it
    assert "calibrated activations of a CNN hidden layer" in md and "spikegcn sweep --task cnn" in md
    # every figure referenced exists and is a PNG
    figs = [l[3:-1] for l in md.splitlines() if l.startswith("- `") and l.endswith(".png`")]
    assert {"report_fig6_mape.png", "report_fig_tw.png", "report_spikes_per_layer.png",
            "report_fig7_encoding_sweep_textgcn_demo.png"} <= set(figs)
    for f in figs:
        assert f"]({f})" in md
        assert (out.parent / f).read_bytes()[:4] == b"\x89PNG"


def test_report_lists_missing_inputs(tmp_path):
    res = tmp_path / "results"
    shutil.copytree(FIX / "textgcn", res / "textgcn")
    md = build_report(res).read_text()
    assert (res / "report.md").is_file()
    assert "CNN records (cnn_tables.json or cnn/*.json): `python benchmarks/cnn_tables.py (in a source " \
           "checkout)`" in md
    assert "MAPE curves (mape*.json): `spikegcn mape --T 16 24`" in md
    assert "a wait-time (Tw < T) sweep: `spikegcn sweep --task textgcn --dataset R8 --T 16 --Q 1.3 --Tw" in md
    assert "No MAPE record" in md and "No wait-time sweep" in md


def test_report_missing_folder_or_records(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_results(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no results records in .*empty.*spikegcn textgcn"):
        load_results(tmp_path / "empty")


def test_report_malformed_json_names_file(results):
    (results / "sweep_textgcn_demo.json").write_text('{"kind": "sweep", "points": {')
    with pytest.raises(ValueError, match=r"sweep_textgcn_demo\.json: not valid JSON"):
        load_results(results)


def test_report_missing_key_names_file_and_key(results):
    p = results / "textgcn" / "R8_T16_Q1.3_Tw16_seed0.json"
    rec = json.loads(p.read_text())
    del rec["snn"]
    p.write_text(json.dumps(rec))
    with pytest.raises(ValueError, match=r"R8_T16_Q1\.3_Tw16_seed0\.json: missing key 'snn'"):
        load_results(results)


def test_report_wrong_type_names_file_and_key(results):
    p = results / "cnn_tables.json"
    rec = json.loads(p.read_text())
    rec["models"]["resnet20"]["ann"] = "high"
    p.write_text(json.dumps(rec))
    with pytest.raises(ValueError, match=r"cnn_tables\.json: key 'models.resnet20.ann' must be a number, got 'high'"):
        load_results(results)
    p.write_text(json.dumps({"models": {"resnet20": {"T": 16}}}))
    with pytest.raises(ValueError, match=r"cnn_tables\.json: missing key"):
        load_results(results)


def test_report_bad_sweep_point_names_the_point(results):
    p = results / "sweep_textgcn_demo.json"
    rec = json.loads(p.read_text())
    rec["points"]["T16_Q1.3_Tw16"]["accuracy"] = None
    p.write_text(json.dumps(rec))
    with pytest.raises(ValueError, match=r"sweep_textgcn_demo\.json: key 'points\.T16_Q1\.3_Tw16\.accuracy' must be a "
                                         r"number, got None"):
        load_results(results)


def test_cli_report_error_is_clear(results, capsys):
    (results / "mape.json").write_text("[1, 2]")
    assert main(["report", "--results", str(results), "--out", str(results / "report.md")]) == 2
    assert re.search(r"^spikegcn report: error: .*mape\.json: not a MAPE record", capsys.readouterr().err)


# ------------------------------------------------------------------------------------------------ mape
def test_mape_command_writes_curves_and_optimum(tmp_path, capsys):
    from spikegcn.coding import best_base

    main(["mape", "--T", "16", "24", "--Q", "1.18:1.34:0.01", "--out", str(tmp_path / "m"), "--quiet"])
    rec = json.loads((tmp_path / "m.json").read_text())
    assert rec["kind"] == "mape" and len(rec["Q"]) == 17 and rec["Q"][0] == 1.18 and rec["Q"][-1] == 1.34
    assert rec["optimum"]["16"]["Q"] == 1.31 and rec["optimum"]["24"]["Q"] == 1.22
    assert rec["optimum"]["16"]["mape_percent"] == pytest.approx(8.41, abs=0.01)
    assert rec["optimum"]["24"]["mape_percent"] == pytest.approx(6.01, abs=0.01)
    assert best_base(16, grid=__import__("numpy").array(rec["Q"])) == 1.31
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    assert "T = 16: optimal Q = 1.31" in out and "T = 24: optimal Q = 1.22" in out


# ------------------------------------------------------------------------------------------------ grids
def test_parse_grid():
    assert parse_grid("1.1:2.0:0.1") == [1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0]
    assert len(parse_grid("1.01:2.00:0.01")) == 100
    assert parse_grid(["8", "12", "8:16:4"], integer=True) == [8, 12, 16]
    for bad, msg in (("2.0:1.1:0.1", "start 2.0 is greater than stop 1.1"), ("abc", "'abc' is not a number"),
                     ("1:2", "neither a number nor a start:stop:step range"), ("1:2:0", "step must be positive"),
                     ("1:x:0.1", "'x' is not a number")):
        with pytest.raises(GridError, match=msg):
            parse_grid(bad)
    with pytest.raises(GridError, match="'16.5' is not an integer"):
        parse_grid("16.5", integer=True)


@pytest.mark.parametrize("argv, msg", [
    (["--Q", "2.0:1.1:0.1"], "argument --Q: range '2.0:1.1:0.1': start 2.0 is greater than stop 1.1"),
    (["--Q", "abc"], "argument --Q: 'abc' is not a number"),
    (["--Q", "0.9"], "argument --Q: values must be > 1, got 0.9"),
    (["--Q", "1.3", "--Tw", "-1"], "argument --Tw: values must be >= 0, got -1"),
])
def test_cli_grid_errors(argv, msg, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sweep", "--dataset", "demo", "--T", "16", *argv])
    assert exc.value.code == 2
    assert msg in capsys.readouterr().err


def test_cnn_sweep_needs_converter(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(sweep_mod, "_cnn_available", lambda: False)
    assert main(["sweep", "--task", "cnn", "--T", "16", "--Q", "1.3", "--out", str(tmp_path / "s.json")]) == 2
    assert "CNN sweeps need the CNN converter" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ sweep
def test_sweep_is_resumable(tmp_path, monkeypatch, capsys):
    out = tmp_path / "sweep_textgcn_demo.json"
    calls: list[str] = []
    made: list[int] = []
    orig = sweep_mod.TASKS["textgcn"]

    def counting(*a, **kw):
        made.append(1)
        task = orig(*a, **kw)
        ev = task.evaluate

        def evaluate(code):
            calls.append(sweep_mod.point_key(code.T, code.Q, code.Tw))
            return ev(code)

        task.evaluate = evaluate
        return task

    monkeypatch.setitem(sweep_mod.TASKS, "textgcn", counting)
    base = ["sweep", "--task", "textgcn", "--dataset", "demo", "--Q", "1.3", "--out", str(out), "--quiet",
            "--no-model-cache"]
    main(base + ["--T", "8", "16"])
    assert calls == ["T8_Q1.3_Tw8", "T16_Q1.3_Tw16"]
    first = json.loads(out.read_text())
    assert set(first["points"]) == set(calls)
    p = first["points"]["T16_Q1.3_Tw16"]
    assert p["mode"] == "functional" and set(p["spikes_per_neuron"]) == {"conv1.mp", "conv1.agg", "conv2.mp"}
    assert p["energy_fp32"]["ratio"] > 1 and p["loss_points"] == pytest.approx(first["ann_accuracy"] - p["accuracy"])
    assert len(first["activation_sample"]["values"]) > 100

    # one more T and one Tw < T point: only those two are computed, the old ones are kept as they were
    calls.clear()
    main(base + ["--T", "8", "12", "16"])
    main(base + ["--T", "16", "--Tw", "4"])
    assert calls == ["T12_Q1.3_Tw12", "T16_Q1.3_Tw4"]
    second = json.loads(out.read_text())
    assert set(second["points"]) == {"T8_Q1.3_Tw8", "T12_Q1.3_Tw12", "T16_Q1.3_Tw16", "T16_Q1.3_Tw4"}
    for k, v in first["points"].items():
        assert second["points"][k] == v
    assert second["points"]["T16_Q1.3_Tw4"]["mode"] == "exact"
    assert "1 of 1 grid points computed now" in capsys.readouterr().out

    # nothing missing: the network is not even trained again
    made.clear()
    main(base + ["--T", "8", "16"])
    assert made == [] and "0 of 2 grid points computed now, 2 already in" in capsys.readouterr().out

    # a file written for another network is refused
    assert main(base + ["--T", "8", "--seed", "1"]) == 2
    assert "holds a sweep of task 'textgcn'" in capsys.readouterr().err


def test_sweep_warns_when_the_ann_differs_from_the_file(tmp_path):
    # a resumed sweep whose retrained ANN scores differently says so through warnings (the library does not print)
    out = tmp_path / "sweep_textgcn_demo.json"
    base = ["sweep", "--task", "textgcn", "--dataset", "demo", "--Q", "1.3", "--out", str(out), "--quiet",
            "--no-model-cache"]
    main(base + ["--T", "8"])
    rec = json.loads(out.read_text())
    rec["ann_accuracy"] -= 1.0
    out.write_text(json.dumps(rec))
    with pytest.warns(RuntimeWarning, match=r"the ANN of this run has accuracy .* each point keeps the ANN accuracy"):
        main(base + ["--T", "12"])
    assert set(json.loads(out.read_text())["points"]) == {"T8_Q1.3_Tw8", "T12_Q1.3_Tw12"}
