"""``python -m boostmd.fit``: the command of :mod:`boostmd.training.fit`."""

from boostmd.training.fit import main

if __name__ == "__main__":
    main()
