"""``python -m clipper``: the ``clipper`` command line (see `clipper.cli`)."""

import sys

from .cli import main

sys.exit(main())
