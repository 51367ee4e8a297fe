"""``python -m boostmd.water_data``: the command of :mod:`boostmd.training.water_data`."""

from boostmd.training.water_data import main

if __name__ == "__main__":
    main()
