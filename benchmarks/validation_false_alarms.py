"""Claim: the verdict's tolerances fail an exact sampler rarely, and 1.5x everywhere did not.

Every verdict of ``python -m boostmd.validate`` divides a sampler's distance from the
reference by a noise floor made of two more exact runs. This script plays the validation
with the exact model as the sampler: from the stored runs of the exact model
(``boostmd/validation/reference_runs``: the ``reference``, ``reference-2`` and
``reference-adaptive`` replicas of a preset, six per dipeptide), every assignment of one
replica as the sampler, one as the reference and two as floor runs is judged
(:mod:`boostmd.validation.false_alarms`), and the fraction that fails is the verdict's
false-alarm rate. Prints one JSON line: per system and metric the 95th and 99th
percentile of the exact ratio, and the false-alarm rates with one tolerance of 1.5 for
every metric (the rule before 2026-12-05) and with ``report.TOLERANCES``.

    python benchmarks/validation_false_alarms.py                  # standard preset
    python benchmarks/validation_false_alarms.py --preset long    # ALA and GLN, 20 ps runs
"""

import argparse
import json

import numpy as np

from boostmd.validation.configurational import recorded
from boostmd.validation.false_alarms import false_alarm_rates, null_ratios
from boostmd.validation.report import CONFIGURATIONAL, METRICS, TOLERANCES
from boostmd.validation.stored import STORE, stored_sampling_runs
from boostmd.validation.validate import PRESETS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="standard", choices=("standard", "long"))
    parser.add_argument("--systems", nargs="+", default=["ALA", "THR", "ILE", "GLN"])
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    skip = preset["equilibration_steps"] + 1
    figures = {"preset": args.preset, "systems": {}}
    for system in args.systems:
        runs = stored_sampling_runs(STORE, system, preset["steps"])
        if len(runs) < 4:
            continue
        metrics = [m for m in METRICS if recorded(runs) or m not in CONFIGURATIONAL]
        ratios = null_ratios(runs, metrics, skip, interval=10, temperature_K=300.0)
        figures["systems"][system] = {
            "replicas": len(runs),
            "verdicts": len(ratios[metrics[0]]),
            "ratio_p95": {m: round(float(np.nanpercentile(r, 95)), 2) for m, r in ratios.items()},
            "ratio_p99": {m: round(float(np.nanpercentile(r, 99)), 2) for m, r in ratios.items()},
            "false_alarms_uniform_1.5": _rounded(false_alarm_rates(ratios, 1.5)),
            "false_alarms": _rounded(false_alarm_rates(ratios, TOLERANCES)),
        }
    print(json.dumps(figures))


def _rounded(rates: dict) -> dict:
    return {metric: round(rate, 3) for metric, rate in rates.items()}


if __name__ == "__main__":
    main()
