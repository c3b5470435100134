"""The bodies of the core `amc` subcommands, one module each, with its typed config (also its --help)."""
