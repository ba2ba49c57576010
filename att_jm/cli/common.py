"""What every part of the CLI shares: exit codes, its exceptions, a request."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from att_jm.config import ConfigError
from att_jm.errors import AttJmError
from att_jm.vocabulary import TABLES

EXIT_OK: Final = 0
EXIT_ERROR_REPLY: Final = 1
EXIT_USAGE: Final = 2
EXIT_NO_ANSWER: Final = 3
DEFAULT_TIMEOUT: Final = 10.0
CLEANUP_TABLES: Final = TABLES
TEXT_WIDTH: Final = 40
NOTHING: Final = "-"

ArgsBuilder = Callable[[argparse.Namespace], dict[str, object]]


#: A job name, as the service checks it (`att_jm.domain.commands.NAME_RE`, not imported: the
#: CLI starts without the domain modules).
JOB_NAME: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")


class UsageError(AttJmError):
    """The command line is well-formed for argparse but asks for something impossible."""


class ParseError(UsageError):
    """argparse refused the command line: `message`, and the (sub)parser that did, whose
    usage line goes with the message."""

    def __init__(self, message: str, parser: argparse.ArgumentParser) -> None:
        super().__init__(message)
        self.parser = parser


class Failure(AttJmError):
    """A run that ends without a result: its `code` (as in `--json`), `message` and exit code;
    `shown` is the line printed on stderr without `--json`."""

    def __init__(self, code: str, message: str, exit_code: int, shown: str | None = None
                 ) -> None:
        super().__init__(message)
        self.code = code
        self.exit_code = exit_code
        self.shown = f"error: {message}" if shown is None else shown


@dataclass(frozen=True)
class Request:
    """One command for the service: its name and its JSON arguments."""

    command: str
    args: dict[str, object]




def wants_json(argv: Sequence[str]) -> bool:
    """Whether `argv` asks for JSON (`--json` before any `--`), even when it does not parse."""
    given = list(argv)
    return "--json" in (given[: given.index("--")] if "--" in given else given)




def usage_failure(error: UsageError | ConfigError) -> Failure:
    """Bad usage as a Failure (exit 2, code `usage`); argparse's kind with its usage line."""
    if isinstance(error, ParseError):
        shown = f"{error.parser.format_usage()}{error.parser.prog}: error: {error.message}"
        return Failure("usage", error.message, EXIT_USAGE, shown)
    return Failure("usage", str(error), EXIT_USAGE, f"att-jm: error: {error}")
