"""``python -m bench``: the benchmark against the peers (see ``bench/run.py``)."""

from bench.run import main

raise SystemExit(main())
