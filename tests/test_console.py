import logging
import os
import subprocess
import sys
import warnings

import pytest

from integrators.console import known_prints_dropped, start_tool

NOISE = ("TorchScript", "torch.jit", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "cuequivariance")


def _warn_from(module: str, message: str, category: type[Warning]) -> None:
    warnings.warn_explicit(message, category, f"{module}.py", 1, module=module)


def test_start_tool_drops_known_third_party_warnings_and_keeps_ours(monkeypatch):
    monkeypatch.setattr(logging, "basicConfig", lambda **_: None)  # keep pytest's logging
    deprecated = "`torch.jit.script` is deprecated. Please switch to `torch.compile`."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start_tool()
        _warn_from("e3nn.o3._wigner", deprecated, DeprecationWarning)
        _warn_from("mace.modules.blocks", "TorchScript does not support this", UserWarning)
        _warn_from("boostmd.dynamics.calculator", deprecated, DeprecationWarning)
        _warn_from("e3nn.o3._wigner", "some other message", UserWarning)
    assert [(w.filename, str(w.message)) for w in caught] == [
        ("boostmd.dynamics.calculator.py", deprecated),
        ("e3nn.o3._wigner.py", "some other message"),
    ]


def test_known_prints_dropped_passes_on_other_lines(capsys):
    with known_prints_dropped():
        print("cuequivariance or cuequivariance_torch is not available. Disabled.")
        print("a line the user should see")
    assert capsys.readouterr().out == "a line the user should see\n"


def test_demo_prints_no_third_party_start_up_noise(tmp_path):
    pytest.importorskip("rdkit")
    env = {**os.environ, "PYTHONWARNINGS": "always"}  # what a warning-verbose user sees
    importing = "from boostmd.forcefields.mace_import import import_mace; import_mace()"
    bare = subprocess.run(
        [sys.executable, "-c", importing], env=env, capture_output=True, text=True, check=True
    )
    assert any(noise in bare.stdout + bare.stderr for noise in NOISE)  # the noise is there
    demo = subprocess.run(
        [sys.executable, "-m", "boostmd.demo", "--steps", "2", "--out", str(tmp_path / "demo")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    output = demo.stdout + demo.stderr
    assert "speedup" in demo.stdout
    assert not [noise for noise in NOISE if noise in output], output
