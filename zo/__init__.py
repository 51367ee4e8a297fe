"""Zeroth-order training (DeepZero-style) with feature reuse, sparsity and parallel forwards.

Estimators fill ``p.grad`` from loss values alone, like ``loss.backward()``::

    import torch.nn.functional as F
    import zo

    estimator = zo.CGE(model, F.cross_entropy, mu=5e-3, feature_reuse=True, sparsity=None)
    optimizer.zero_grad()
    loss = estimator.estimate(inputs, targets)
    optimizer.step()

:class:`CGE` perturbs one coordinate per query, restarting at the perturbed stage
(feature reuse) and evaluating many perturbed copies per call; :class:`RGE` uses random
Gaussian directions; :class:`FirstOrder` is backpropagation behind the same interface.
:func:`zo_grasp` gives layer-wise sparsity from loss values for sparse CGE. The command
``python -m zo.train`` trains the bundled models (also under ``torchrun``).
"""

from zo.cge import CGE
from zo.estimator import FirstOrder, GradientEstimator
from zo.models import MLP, ResNet20, SmallCNN, build_model
from zo.rge import RGE, random_gradient
from zo.sparsity import SparseMask, zo_grasp
from zo.stages import (
    check_stages,
    frozen_running_stats,
    model_stages,
    stage_costs,
    stage_inputs,
    stage_times,
)
from zo.tuning import QueryBatchTuner

__all__ = [
    "CGE",
    "MLP",
    "RGE",
    "FirstOrder",
    "GradientEstimator",
    "QueryBatchTuner",
    "ResNet20",
    "SmallCNN",
    "SparseMask",
    "build_model",
    "check_stages",
    "frozen_running_stats",
    "model_stages",
    "random_gradient",
    "stage_costs",
    "stage_inputs",
    "stage_times",
    "zo_grasp",
]

__version__ = "0.1.0"
