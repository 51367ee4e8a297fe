"""A plain ASE script with BoostMD prints each warning once, even while the guard trips."""

import subprocess
import sys
from collections import Counter

SCRIPT = """
import numpy as np
import torch
from ase import units
from ase.md.langevin import Langevin

from boostmd import BoostMDCalculator
from boostmd.forcefields.peptides import capped_dipeptide
from boostmd.forcefields.pretrained import load_pretrained

reference, surrogate = load_pretrained()
with torch.no_grad():  # a deliberately wrong surrogate: forces far beyond the reference's
    surrogate.edge_head[1].weight.mul_(1e4)
atoms = capped_dipeptide("ALA")
atoms.calc = BoostMDCalculator(reference, surrogate, interval=10, frame="start")
rng = np.random.default_rng(0)
dynamics = Langevin(atoms, 1 * units.fs, temperature_K=300, friction=0.001 / units.fs, rng=rng)
dynamics.run(30)
print("fallbacks", atoms.calc.fallbacks, "reference calls", atoms.calc.stats.full_steps)
"""


def test_each_warning_is_printed_once_and_fallbacks_are_summarised():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    fallbacks = int(done.stdout.splitlines()[-1].split()[1])
    assert fallbacks >= 20  # the guard tripped on (nearly) every surrogate step
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    repeated = {line: n for line, n in Counter(lines).items() if n > 1}
    assert not repeated, repeated
    # the first fallback with what to do, then a summary at the 10th (and 100th, ...)
    assert sum("force-guard fallback" in line for line in lines) == 1 + (fallbacks >= 10)
    assert sum("matscipy" in line or "cell size to cutoff" in line for line in lines) <= 1
