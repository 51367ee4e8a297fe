"""``python -m boostmd.xtb_data``: the command of :mod:`boostmd.training.xtb_data`."""

from boostmd.training.xtb_data import main

if __name__ == "__main__":
    main()
