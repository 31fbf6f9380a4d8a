"""`python -m kit`: the command line (see kit.cli)."""

import sys

from kit.cli import main

sys.exit(main())
