"""``python -m boostmd.train``: the command of :mod:`boostmd.training.train`."""

from boostmd.training.train import main

if __name__ == "__main__":
    main()
