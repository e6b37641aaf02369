"""`python -m hma.cli …`: the `hma` command (the job specs in jobs/ run themselves this way)."""

import sys

from hma.cli import main

sys.exit(main())
