"""``python -m jaxconvviz`` == the ``jaxconvviz`` console script."""

from jaxconvviz.cli import main

raise SystemExit(main())
