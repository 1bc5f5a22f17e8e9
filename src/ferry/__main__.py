"""`python -m ferry` is the `ferry` command."""

import sys

from ferry.cli import main

sys.exit(main())
