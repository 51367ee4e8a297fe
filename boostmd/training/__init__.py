"""Training a surrogate (and the reference it is trained for).

``data`` (reference MD runs and their training pairs) and ``run_files`` (their files),
``windows`` (on-policy BoostMD windows labelled by the reference), ``train`` (the
surrogate's training), ``xtb_data`` and ``make_reference`` (the shipped reference's
recipe: GFN2-xTB labels, then mace-torch). Imports :mod:`boostmd.dynamics` and
:mod:`boostmd.forcefields`.
"""
