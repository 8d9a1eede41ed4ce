"""``python -m adamp_core``: see :mod:`adamp_core.cli`."""

from .cli import main

raise SystemExit(main())
