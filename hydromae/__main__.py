"""``python -m hydromae`` (and ``torchrun -m hydromae``): the ``hydromae`` command."""

import sys

from hydromae.cli import main

sys.exit(main())
