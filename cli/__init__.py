"""The `lfm` command line: `cli.main` parses, each module of `cli.verbs` registers its verbs (the top floor)."""
