"""BoostMD: a reference MACE every N MD steps, a cheap feature-reusing surrogate between.

``atoms.calc = BoostMDCalculator(MACEReference(model), Surrogate.load(path), interval=10)``
runs any ASE dynamics with the reference on every tenth step and the surrogate, which
starts from the reference's cached node features, on the others.
``BoostLangevin(atoms, timestep, temperature_K, friction)`` is Langevin dynamics that
checks each window's refresh energy error, reruns a wrong window with the reference and
carries a per-atom adaptive friction that absorbs what slightly wrong windows pump;
``AdaptiveLangevin`` is that thermostat for any ASE calculator.
``ReplicaBatch(reference, surrogate).run(tasks)`` advances many such runs together, with
their model calls batched.
"""

from boostmd.dynamics.adaptive import AdaptiveLangevin
from boostmd.dynamics.calculator import BoostMDCalculator
from boostmd.dynamics.integrator import BoostLangevin
from boostmd.dynamics.replicas import ReplicaBatch
from boostmd.forcefields.reference import MACEReference, ReferenceResult
from boostmd.forcefields.surrogate import ReferenceFrame, Surrogate, SurrogateConfig

__version__ = "0.1.0"

__all__ = [
    "AdaptiveLangevin",
    "BoostLangevin",
    "BoostMDCalculator",
    "MACEReference",
    "ReferenceFrame",
    "ReferenceResult",
    "ReplicaBatch",
    "Surrogate",
    "SurrogateConfig",
]
