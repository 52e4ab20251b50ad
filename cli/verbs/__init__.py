"""One module per area; each exposes `register(subparsers)` and is discovered by `cli.main`."""
