r"""``python -m pyg_infdiff.metrics``: see :mod:`pyg_infdiff.metrics.cli`."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
