"""``python -m worldflow``: the same as the ``worldflow`` command."""

from worldflow.cli import main

raise SystemExit(main())
