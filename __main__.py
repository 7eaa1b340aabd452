"""`python -m reverie` is the `reverie` command."""

import sys

from reverie.rpc.cli import main

sys.exit(main())
