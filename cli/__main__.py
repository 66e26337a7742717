"""``python -m zeroembed.cli``: the same as the ``zeroembed`` command."""

import sys

from . import main

sys.exit(main())
