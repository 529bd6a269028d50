"""``python -m vmkit.nbtools``: see :mod:`vmkit.nbtools.command`."""

import sys

from vmkit.nbtools.command import main

sys.exit(main())
