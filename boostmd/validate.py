"""``python -m boostmd.validate``: the command of :mod:`boostmd.validation.validate`."""

from boostmd.validation.validate import main

if __name__ == "__main__":
    main()
