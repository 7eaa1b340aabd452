"""The wire protocol, server dispatch, the blocking client and the CLI."""
