"""``python -m boostmd.make_reference``: the command of :mod:`boostmd.training.make_reference`."""

from boostmd.training.make_reference import main

if __name__ == "__main__":
    main()
