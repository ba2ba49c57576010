"""The `att-jm` command line (see `att_jm.cli.handlers`)."""

from att_jm.cli.handlers import main

__all__ = ["main"]
