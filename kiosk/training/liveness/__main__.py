"""``python -m kiosk.training.liveness``: see :mod:`kiosk.training.liveness.cli`."""

from kiosk.training.liveness.cli import main

raise SystemExit(main())
