"""``python -m drift ...`` (and ``torchrun ... -m drift ...``): the same as the ``drift`` console script."""

from drift.cli import main

raise SystemExit(main())
