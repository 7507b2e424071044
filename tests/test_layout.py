"""The house rules: the core imports neither the experiment harness nor the model zoo, and model libraries plug their
shortcut modules into the converters through the leaf registry (spikegcn.nn.leaves)."""
import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from spikegcn.nn import SpikingResidual
from spikegcn.nn.leaves import ChannelSelect, leaf_rule, leaf_types, register_leaf

CORE = ["coding", "neuron", "spikes", "kernels", "nn", "conversion", "operators", "simulate", "energy", "inference",
        "distributed", "validate", "fileio", "graphdata"]

_IMPORT_ALL = """
import importlib, json, pkgutil, sys
import spikegcn
loaded = []
for name in {core!r}:
    mod = importlib.import_module("spikegcn." + name)
    loaded.append(mod.__name__)
    for info in pkgutil.walk_packages(getattr(mod, "__path__", []), mod.__name__ + "."):
        if info.name.rsplit(".", 1)[-1].startswith("_"):
            continue
        importlib.import_module(info.name)
        loaded.append(info.name)
print(json.dumps({{"loaded": loaded, "modules": sorted(m for m in sys.modules if m.startswith("spikegcn"))}}))
"""


def _import_in_subprocess(core: list[str]) -> dict:
    p = subprocess.run([sys.executable, "-c", _IMPORT_ALL.format(core=core)], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_core_imports_no_harness_and_no_model_zoo():
    out = _import_in_subprocess(CORE)
    assert "spikegcn.conversion.fx" in out["loaded"] and "spikegcn.nn.residual" in out["loaded"]
    bad = [m for m in out["modules"] if m.startswith(("spikegcn.experiments", "spikegcn.vision", "spikegcn.text",
                                                     "spikegcn.cli"))]
    assert bad == [], f"the core imported {bad}"


def test_model_libraries_import_no_harness():
    out = _import_in_subprocess(["vision", "text"])
    assert "spikegcn.vision.models" in out["loaded"]
    assert [m for m in out["modules"] if m.startswith("spikegcn.experiments")] == []


# ------------------------------------------------------------------------------------------------ leaf registry
class _Select(nn.Module):  # a user's own option-A style shortcut, unknown to the core until registered
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.cin, self.cout, self.stride = cin, cout, stride

    def forward(self, x):
        p = (self.cout - self.cin) // 2
        return nn.functional.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, p, self.cout - self.cin - p))


def test_registered_shortcut_converts_like_option_a():
    from spikegcn.vision.models import OptionAShortcut

    assert OptionAShortcut in leaf_types()
    assert leaf_rule(OptionAShortcut(16, 32)) == ChannelSelect(16, 32, 2)
    assert leaf_rule(_Select(16, 32, 2)) is None
    register_leaf(_Select, lambda m: ChannelSelect(m.cin, m.cout, m.stride))
    assert leaf_rule(_Select(16, 32, 2)) == ChannelSelect(16, 32, 2)

    torch.manual_seed(0)
    conv2 = nn.Conv2d(32, 32, 3, padding=1)
    a = SpikingResidual.from_block(conv2, None, OptionAShortcut(16, 32, 2))
    b = SpikingResidual.from_block(conv2, None, _Select(16, 32, 2))
    assert a.shortcut == b.shortcut == "option_a"
    torch.testing.assert_close(a.shortcut_weight, b.shortcut_weight, rtol=0, atol=0)
    assert a.shortcut_weight.sum().item() == 16 and a.shortcut_weight[8:24].eq(1).all()
    with pytest.raises(ValueError, match="shortcut gives 32 channels, conv2 64"):
        SpikingResidual.from_block(nn.Conv2d(64, 64, 3, padding=1), None, _Select(16, 32, 2))


def test_register_leaf_rejects_bad_input():
    with pytest.raises(TypeError, match="torch.nn.Module subclass"):
        register_leaf(int, lambda m: None)
    with pytest.raises(TypeError, match="callable rule"):
        register_leaf(_Select, None)
    with pytest.raises(ValueError, match="0 < in_channels <= out_channels"):
        ChannelSelect(32, 16, 2)
    assert ChannelSelect(16, 32, 2).gains(torch.zeros((), dtype=torch.float64)).dtype == torch.float64
