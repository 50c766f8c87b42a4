"""``python -m vdlearn`` is the ``vdlearn`` command."""

import sys

from vdlearn.cli import main

sys.exit(main())
