"""The ``spikegcn`` command: lazy imports, one-line user errors found before any work, config schemas, output
folders, and the explicitly built CPU kernels (never compiled on first use)."""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spikegcn.cli import CNN_MODELS, IMAGE_DATASETS, RUNS, SWEEP_MODELS, main
from spikegcn.config import TEXTGCN_SCHEMA, TRAIN_SCHEMA, ConfigError, load_config, validate

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["textgcn", "cnn", "finetune", "mape", "sweep", "report", "build-kernels"]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``spikegcn argv`` (argparse errors exit, command errors return)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------------------------------------ fast help
def test_cli_import_loads_no_heavy_module():
    heavy = ["torch", "torch_geometric", "matplotlib", "numpy", "scipy", "sklearn", "yaml", "tqdm"]
    code = ("import sys, spikegcn.cli as c; p = c.build_parser(); "
            f"print([m for m in {heavy!r} if m in sys.modules])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert res.stdout.strip() == "[]", res.stdout


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_help_answers(command, capsys):
    argv = ([command] if command else []) + ["--help"]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert "usage: spikegcn" in capsys.readouterr().out


def test_cli_tables_match_the_library():
    from spikegcn.experiments import sweep
    from spikegcn.experiments.textgcn_train import TrainConfig
    from spikegcn.vision import DATASETS, MODELS

    assert set(CNN_MODELS) == set(MODELS)
    assert set(IMAGE_DATASETS) == set(DATASETS)
    assert set(SWEEP_MODELS) == set(sweep.CNN_MODELS)
    assert set(TRAIN_SCHEMA) == {f.name for f in dataclasses.fields(TrainConfig)} - {"seed"}


# ------------------------------------------------------------------------------------------------ user errors
def _forbid_work(monkeypatch):
    """Any pipeline run fails the test: the errors below must come before it."""
    import spikegcn.experiments.cnn as vp
    import spikegcn.experiments.textgcn as tp

    def boom(*a, **k):
        raise AssertionError("the pipeline ran before the error was found")

    monkeypatch.setattr(tp, "run_textgcn", boom)
    monkeypatch.setattr(vp, "run_cnn", boom)


def _configs(tmp_path: Path) -> dict[str, Path]:
    texts = {"seed": 'dataset: demo\nseed: "abc"\n', "epochs": "dataset: demo\ntrain:\n  epochs: many\n",
             "typo": "dataset: demo\ntrian:\n  epochs: 3\n", "modes": "dataset: demo\nmodes: functional\n",
             "yaml": "dataset: [demo\n"}
    out = {}
    for k, t in texts.items():
        out[k] = tmp_path / f"{k}.yaml"
        out[k].write_text(t)
    return out


@pytest.mark.parametrize("case", [
    ("cnn --model resnet20 --threads -1", "argument --threads: must be >= 1, got -1"),
    ("cnn --model resnet20 --limit -5", "argument --limit: must be >= 0, got -5"),
    ("cnn --model resnet20 --dataset mnist", "resnet20 takes 32x32 CIFAR images, not --dataset mnist"),
    ("cnn --model lenet5 --dataset cifar10", "lenet5 takes 28x28 MNIST digits"),
    ("cnn --model resnet20 --out {file}", "is a file; give a folder"),
    ("cnn --model resnet20 --weights {dir}", "--weights {dir}: is a folder, not a file"),
    ("cnn --model resnet20 --T 500", "underflows float32"),
    ("mape --T 16 --sigma 0", "argument --sigma: must be > 0, got 0"),
    ("textgcn --config {seed}", "'seed' must be an integer, got 'abc'"),
    ("textgcn --config {epochs}", "'train.epochs' must be an integer, got 'many'"),
    ("textgcn --config {typo}", "unknown key 'trian' (did you mean 'train'?)"),
    ("textgcn --config {modes}", "'modes' must be a list, got 'functional' (str) (write a YAML list"),
    ("textgcn --config {yaml}", "is not valid YAML"),
    ("textgcn --config {dir}/none.yaml", "not found"),
    ("textgcn", "no dataset: pass --dataset"),
    ("textgcn --dataset foo", "unknown Text GCN dataset 'foo'"),
    ("sweep --dataset foo --T 16 --Q 1.3", "unknown Text GCN dataset 'foo'"),
    ("textgcn --dataset demo --out {file}", "is a file; give a folder"),
    ("sweep --task cnn --model lenet5 --dataset cifar10 --T 16 --Q 1.3", "is swept on --dataset mnist"),
    ("sweep --task textgcn --T 16 --Q 1.3", "--task textgcn needs --dataset"),
    ("sweep --dataset demo --T 16 --Q 1.3 --out {dir}", "is a folder; give a file name"),
    ("finetune resnet20 --out {dir}", "is a folder; give a file name"),
    ("sweep --task textgcn --dataset demo --T 16 --Q 0.5", "values must be > 1"),
    ("report --results {dir}/none", "no such folder"),
    ("report --results {dir} --out {dir}", "is a folder; give a file name"),
    ("finetune resnet20 --init {dir}/none.pt", "--init"),
    ("cnn --model resnet20 --bogus 1", "unrecognized arguments: --bogus 1"),
], ids=lambda c: c[0].split()[0] + ":" + c[1][:30])
def test_user_errors_are_one_line_exit_2_before_any_work(case, tmp_path, capsys, monkeypatch):
    _forbid_work(monkeypatch)
    monkeypatch.chdir(tmp_path)
    argv_t, expected = case
    (tmp_path / "afile").write_text("x")
    subs = {"file": str(tmp_path / "afile"), "dir": str(tmp_path), **{k: str(v) for k, v in _configs(tmp_path).items()}}
    argv = argv_t.format(**subs).split()
    code, out, err = run(argv, capsys)
    assert code == 2, (argv, out, err)
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("spikegcn") and expected.format(**subs) in err, err


def test_data_and_file_errors_become_one_line(tmp_path, capsys, monkeypatch):
    """DataFileError and a truncated --weights file: the message names the file, no traceback."""
    from spikegcn.datafiles import DataFileError
    from spikegcn.experiments.cnn_train import save_checkpoint
    from spikegcn.vision import resnet20

    good = save_checkpoint(tmp_path / "w.pt", resnet20(), arch="resnet20")
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[:1000])
    code, _, err = run(["cnn", "--model", "resnet20", "--weights", str(trunc), "--out", str(tmp_path), "--quiet"],
                       capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(trunc) in err, err

    import spikegcn.experiments.cnn as vp

    def missing(*a, **k):
        raise DataFileError("CIFAR-10 file 'cifar10/cifar-10-python.tar.gz' not found (looked in: /nowhere)")

    monkeypatch.setattr(vp, "run_cnn", missing)
    code, _, err = run(["cnn", "--model", "resnet20", "--out", str(tmp_path), "--quiet"], capsys)
    assert code == 2 and err.strip() == ("spikegcn cnn: error: CIFAR-10 file 'cifar10/cifar-10-python.tar.gz' not "
                                         "found (looked in: /nowhere)")
    monkeypatch.setenv("SPIKEGCN_DEBUG", "1")  # the traceback for developers
    with pytest.raises(DataFileError):
        main(["cnn", "--model", "resnet20", "--out", str(tmp_path), "--quiet"])


# ------------------------------------------------------------------------------------------------ configs
def test_shipped_configs_match_the_schema():
    paths = sorted((ROOT / "configs" / "textgcn").glob("*.yaml"))
    assert paths
    for p in paths:
        cfg = load_config(p, TEXTGCN_SCHEMA)
        assert cfg["dataset"] and cfg["modes"]


def test_schema_checks_types_ranges_and_nesting():
    validate({"T": 16, "Q": 2, "Tw": None, "train": {"dropout": 0.5, "tf_adam_eps": False}}, TEXTGCN_SCHEMA)
    bad = [({"T": True}, "'T' must be an integer"), ({"T": 0}, "'T' must be >= 1"),
           ({"Q": 1.0}, "'Q' must be > 1"), ({"Q": float("nan")}, "'Q' must be a number"),
           ({"train": {"dropout": 1.0}}, "'train.dropout' must lie in [0, 1)"),
           ({"train": {"seed": 1}}, "unknown key 'train.seed'"), ({"train": [1]}, "'train' must be a mapping"),
           ({"modes": ["functional", "exakt"]}, "'modes' has 'exakt'; allowed: functional, exact"),
           ({"modes": []}, "'modes' is an empty list"), ({"seed": None}, "'seed' is empty"),
           ({"dataset": 8}, "'dataset' must be a string")]
    for cfg, msg in bad:
        with pytest.raises(ConfigError) as exc:
            validate(cfg, TEXTGCN_SCHEMA, where="config x.yaml")
        assert str(exc.value).startswith("config x.yaml: ") and msg in str(exc.value), (cfg, str(exc.value))
    with pytest.raises(ConfigError, match="must be a mapping"):
        validate(["dataset"], TEXTGCN_SCHEMA)


# ------------------------------------------------------------------------------------------------ outputs
def test_records_go_to_the_runs_folder(tmp_path, capsys, monkeypatch):
    """With no --out, records land in ./spikegcn-runs/ (never ./results/); the report reads them from there."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["mape", "--T", "4", "--Q", "1.2", "1.6", "--quiet"], capsys)
    assert code == 0, err
    rec = json.loads((tmp_path / RUNS / "mape.json").read_text())
    assert rec["T"] == [4] and (tmp_path / RUNS / "mape.png").is_file()
    assert "optimal Q" in out and not (tmp_path / "results").exists()
    (tmp_path / RUNS / "textgcn").mkdir()
    shutil.copy(ROOT / "results" / "textgcn" / "R8_T16_Q1.3_Tw16_seed0.json", tmp_path / RUNS / "textgcn")
    code, out, err = run(["report", "--quiet"], capsys)
    assert code == 0, err
    assert (tmp_path / RUNS / "report.md").is_file() and f"report: {RUNS}/report.md" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == [RUNS]
    (tmp_path / "mine").mkdir()
    assert run(["mape", "--T", "4", "--Q", "1.5", "--out", "mine", "--quiet"], capsys)[0] == 0
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["mape.json", "mape.png"]


def test_quiet_silences_notes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    log = logging.getLogger("spikegcn")
    run(["mape", "--T", "4", "--Q", "1.5", "--quiet"], capsys)
    assert log.getEffectiveLevel() == logging.WARNING
    log.getChild("kernels").info("a note")
    assert capsys.readouterr().err == ""
    run(["mape", "--T", "4", "--Q", "1.5"], capsys)
    log.getChild("kernels").info("a note")
    assert capsys.readouterr().err == "spikegcn: a note\n"


# ------------------------------------------------------------------------------------------------ kernels
@pytest.fixture
def fresh_kernels(tmp_path, monkeypatch):
    """fused_cpu with an empty cache and its load state reset; compiling fails the test."""
    from spikegcn.kernels import fused_cpu

    monkeypatch.setenv("SPIKEGCN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SPIKEGCN_NO_FUSED", raising=False)
    monkeypatch.setattr(fused_cpu, "_tried", False)
    monkeypatch.setattr(fused_cpu, "_module", None)
    import torch.utils.cpp_extension as ext

    def no_compile(*a, **k):
        raise AssertionError("compiled on first use")

    monkeypatch.setattr(ext, "load", no_compile)
    monkeypatch.setattr(ext, "load_inline", no_compile)
    return fused_cpu


def test_kernels_are_never_compiled_on_first_use(fresh_kernels, caplog):
    from spikegcn import PhaseCode, decode, encode

    code = PhaseCode(16, 1.3)
    x = torch.randn(70_000, generator=torch.Generator().manual_seed(0))  # above the compiled path's threshold
    with caplog.at_level(logging.INFO, logger="spikegcn"):
        phase, _ = encode(x, code)
        v = decode(phase, code)
    assert fresh_kernels.load() is None
    assert "spikegcn build-kernels" in caplog.text
    assert v.shape == x.shape and int(phase.max()) <= 16
    assert fresh_kernels.max_isa() == "portable"


def test_kernel_cache_is_keyed_by_environment(fresh_kernels, monkeypatch):
    fc = fresh_kernels
    key = fc.build_key()
    assert fc.library_path(key).parent == fc.build_dir(key) and key in fc.library_path(key).name
    version = torch.__version__
    monkeypatch.setattr(torch, "__version__", "0.0.1+other")
    other_torch = fc.build_key()
    monkeypatch.setattr(torch, "__version__", version)
    assert fc.build_key() == key
    monkeypatch.setenv("CXX", "clang++-that-does-not-exist")
    other_cxx = fc.build_key()
    monkeypatch.delenv("CXX")
    monkeypatch.setattr(fc, "CFLAGS", (*fc.CFLAGS, "-march=native"))
    other_flags = fc.build_key()
    assert len({key, other_torch, other_cxx, other_flags}) == 4
    assert fc.SOURCE.is_file() and fc.SOURCE.suffix == ".cpp"


def test_build_kernels_command(fresh_kernels, capsys, monkeypatch):
    def fail(force=False, verbose=False):
        raise RuntimeError("building the compiled CPU kernels failed (no compiler); spikegcn keeps using the torch "
                           "path")

    monkeypatch.setattr(fresh_kernels, "build", fail)
    code, _, err = run(["build-kernels", "--quiet"], capsys)
    assert code == 2 and err.count("\n") == 1 and "keeps using the torch path" in err
