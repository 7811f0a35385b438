"""``python -m unichest_lib <verb> ...``: see :mod:`unichest_lib.cli`."""

from .cli import main

raise SystemExit(main())
