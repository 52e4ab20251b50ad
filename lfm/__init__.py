"""lfm-export: turn a frozen recommendation foundation model into daily UR/IR/CR features.

This package holds what every other package imports (config, dates, names) and the `lfm` CLI.
Nothing outside `cli.main` imports the CLI.
"""
