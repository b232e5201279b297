"""Entry point: `python -m pcloud.backend.k3s.standin ...` (see cli.py)."""

import sys

from pcloud.backend.k3s.standin.cli import main

sys.exit(main())
