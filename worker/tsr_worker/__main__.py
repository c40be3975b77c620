"""``python -m tsr_worker``: the same as the ``tsr-worker`` command."""

import sys

from .cli import main

sys.exit(main())
