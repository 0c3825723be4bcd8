"""``python -m sipmesh`` is the ``sipmesh`` command."""

import sys

from sipmesh.cli import main

sys.exit(main())
