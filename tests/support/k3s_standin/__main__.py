"""Entry point: `python -m tests.support.k3s_standin ...` (see cli.py)."""

import sys

from tests.support.k3s_standin.cli import main

sys.exit(main())
