"""Applications on top of the library layers: the ``mbrl-control`` command line and its subcommands."""
