"""BoostMD: a reference MACE every N MD steps, a cheap feature-reusing surrogate between.

``atoms.calc = BoostMDCalculator(MACEReference(model), Surrogate.load(path), interval=10)``
runs any ASE dynamics with the reference on every tenth step and the surrogate, which
starts from the reference's cached node features, on the others.
"""

from boostmd.calculator import BoostMDCalculator
from boostmd.reference import MACEReference, ReferenceResult
from boostmd.surrogate import ReferenceFrame, Surrogate, SurrogateConfig

__version__ = "0.1.0"

__all__ = [
    "BoostMDCalculator",
    "MACEReference",
    "ReferenceFrame",
    "ReferenceResult",
    "Surrogate",
    "SurrogateConfig",
]
