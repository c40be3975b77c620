"""``python -m tsr``: the ``tsr`` command."""

import sys

from .cli import main

sys.exit(main())
