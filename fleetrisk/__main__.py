"""``python -m fleetrisk``: the same as the ``fleetrisk`` command."""

import sys

from .cli import main

sys.exit(main())
