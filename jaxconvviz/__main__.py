"""``python -m jaxconvviz`` == the ``jaxconvviz`` console script."""

from .cli import main

raise SystemExit(main())
