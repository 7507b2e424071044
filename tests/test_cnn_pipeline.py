import os
from pathlib import Path

import pytest

from spikegcn.experiments.cnn import load_data, load_model, run_cnn, summary_table


def _env_file(var: str, rel: str) -> bool:
    root = os.environ.get(var)
    return bool(root) and (Path(root) / rel).is_file()


have_cifar = _env_file("SPIKEGCN_DATA", "cifar10-jpg/cifar10_jpg.zip") and \
    _env_file("SPIKEGCN_WEIGHTS", "resnet20-12fca82f.th")
NEED = "needs cifar10-jpg/cifar10_jpg.zip under $SPIKEGCN_DATA and resnet20-12fca82f.th under $SPIKEGCN_WEIGHTS"


def test_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file .* not found"):
        load_model("resnet20", tmp_path / "nope.pt")
    with pytest.raises(ValueError, match="has no published weights"):
        load_model("vgg_cifar", None)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_data("imagenet", 10, 10)


@pytest.mark.skipif(not have_cifar, reason=NEED)
def test_resnet20_pipeline_small():
    rec = run_cnn("resnet20", "cifar10-jpg", limit=40, calib=100, modes=("functional",))
    f = rec["snn"]["functional"]
    assert rec["test_images"] == 40 and rec["ann_accuracy"] >= 70
    assert f["agreement_with_ann"] >= 80
    assert 0 < f["spikes_per_neuron"]["conv1"] <= 1 and f["input_spikes_per_pixel"] > 1
    assert f["energy_int8"] == pytest.approx(1.5 * f["energy_fp32"]["ratio"], rel=1e-3)
    assert "SNN functional" in summary_table(rec)


def test_cli_cnn(tmp_path, capsys):
    from spikegcn.cli import main

    assert main(["cnn", "--model", "vgg_cifar", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "has no published weights" in err and len(err.strip().splitlines()) == 1
    if not have_cifar:
        pytest.skip(NEED)
    assert main(["cnn", "--model", "resnet20", "--dataset", "cifar10-jpg", "--limit", "20", "--calib", "50",
                 "--modes", "functional", "--Tw", "8", "--out", str(tmp_path), "--quiet"]) == 0
    assert "SNN functional" in capsys.readouterr().out
    assert (tmp_path / "resnet20_cifar10-jpg_T16_Q1.3_Tw8_seed0.json").is_file()


def test_load_model_prefers_finetuned_checkpoint(tmp_path, monkeypatch):
    import torch

    from spikegcn.experiments.cnn_train import default_checkpoint_path, save_checkpoint
    from spikegcn.vision import resnet20

    monkeypatch.setenv("SPIKEGCN_CACHE", str(tmp_path))
    torch.manual_seed(0)
    net = resnet20()
    save_checkpoint(default_checkpoint_path("resnet20"), net, arch="resnet20")
    model, desc = load_model("resnet20", None, "cifar10-jpg")
    assert desc.startswith("fine-tuned on CIFAR-10 JPEG") and str(tmp_path) in desc
    for k, v in net.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def test_cli_finetune_rejects_unknown_model(capsys):
    from spikegcn.cli import main

    with pytest.raises(SystemExit):
        main(["finetune", "vgg_cifar"])
    assert "invalid choice: 'vgg_cifar'" in capsys.readouterr().err
    assert main(["finetune", "resnet20", "--fake-quant", "16.5", "1.3"]) == 2
    assert "T must be an integer" in capsys.readouterr().err
    assert main(["finetune", "resnet20", "--fake-quant", "16", "0.9"]) == 2
    assert "Q must be" in capsys.readouterr().err


@pytest.mark.skipif(not have_cifar, reason=NEED)
def test_cnn_speed_benchmark_runs_small(tmp_path):
    """benchmarks/cnn_speed.py end to end on 8 images: every configuration timed in every round, both ratios
    (best-of and the median of same-round ratios) recorded and shown, exact Tw = T equal to functional, the
    kernel equal to the per-phase path, and the wait sweep timed on more images than the batch, batch by batch."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "speed"
    subprocess.run([sys.executable, str(root / "benchmarks" / "cnn_speed.py"), "--models", "vgg", "--batch", "8",
                    "--repeat", "3", "--calib", "32", "--sweep-images", "12", "--sweep-tw", "8", "16", "--tw", "8",
                    "--out", str(out)], check=True, capture_output=True, timeout=600)
    m = json.loads(out.with_suffix(".json").read_text())["models"][0]
    keys = ["ann", "functional", "exact Tw=16", "exact Tw=8", "exact Tw=8, per phase"]
    assert list(m["all_seconds"]) == keys and all(len(v) == 3 for v in m["all_seconds"].values())
    assert m["seconds"] == {k: min(v) for k, v in m["all_seconds"].items()}
    assert m["paired_ratio_median"]["ann"] == 1.0 and all(v > 0 for v in m["paired_ratio_median"].values())
    assert m["checks"]["exact Tw=T equals functional"] is True
    assert m["checks"]["kernel vs per phase: argmax agreement"] == 1.0
    assert "median over the rounds" in out.with_suffix(".md").read_text()
    sweep = m["tw_sweep"]
    assert (sweep["images"], sweep["batch"], sweep["waits"]) == (12, 8, [8, 16])
    assert sweep["speedup"] == sweep["seconds"]["per_phase"] / sweep["seconds"]["kernel"] > 0
