"""`python -m reverie` is the `reverie` command."""

import sys

# -- hooks: the fast path (rpc/hook.py). A hook runs in the agent's critical
# path: skip the CLI's parser and its imports (argparse, msgspec, the client).
if sys.argv[1:2] == ["hook"] and not {"-h", "--help"} & set(sys.argv[2:]):
    from reverie.rpc.hook import main as hook_main

    sys.exit(hook_main(sys.argv[2:]))

from reverie.rpc.cli import main  # after the fast path, on purpose

sys.exit(main())
