"""``python -m boostmd.data``: the command of :mod:`boostmd.training.data`."""

from boostmd.training.data import main

if __name__ == "__main__":
    main()
