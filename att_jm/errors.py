"""The package's one exception family, and the reply error code of each (in one place).

    AttJmError                 code "internal" (also: any error that is not one of these)
    +-- InvalidInput           code "invalid"
    +-- NotFound               code "not_found"
    +-- Conflict               code "conflict"
    +-- UnknownCommand         code "unknown_command"
    +-- TooLarge               code "too_large"
    |   +-- EventTooLarge
    +-- Forbidden              code "forbidden"
    +-- RateLimited            code "rate_limited"

Every other exception the package raises (configuration, the site, the runner, MQTT, the
audit, the CLI's usage) derives from AttJmError too and is never sent in a reply: the
service answers `internal` for anything but the refusals above.

Messages quote user values cut short (`limits.shown`), and an error reply cuts the whole
message to `limits.MAX_REASON_CHARS`: an error reply is never larger than a few kB.
"""

from __future__ import annotations

from typing import Final


class AttJmError(Exception):
    """An error of the ATT Job Manager; `code` is the reply error code."""

    code = "internal"

    @property
    def message(self) -> str:
        return str(self)


class InvalidInput(AttJmError):
    """The input is malformed: wrong type, missing field, out of range."""

    code = "invalid"


class NotFound(AttJmError):
    """The job or entry named does not exist (or is not in the table named)."""

    code = "not_found"


class Conflict(AttJmError):
    """The request contradicts the current state (duplicate name, running entry)."""

    code = "conflict"


class UnknownCommand(AttJmError):
    """The command name is not one of the contract's commands."""

    code = "unknown_command"


class TooLarge(AttJmError):
    """The payload is larger than the configured maximum."""

    code = "too_large"


class EventTooLarge(TooLarge):
    """An event the message would store is over `limits.MAX_EVENT_BYTES`."""


class Forbidden(AttJmError):
    """The actor's role may not send this command (an auditor's `job.add`)."""

    code = "forbidden"


class RateLimited(AttJmError):
    """The actor sent more commands than its rate allows (a burst, then a steady rate)."""

    code = "rate_limited"


#: The codes a reply may carry, as the contract lists them.
REPLY_CODES: Final = frozenset(
    cls.code for cls in (AttJmError, InvalidInput, NotFound, Conflict, UnknownCommand, TooLarge,
                         Forbidden, RateLimited)
)


def reply_code(error: BaseException) -> str:
    """The reply error code for `error` (`internal` for anything but a refusal)."""
    code = error.code if isinstance(error, AttJmError) else "internal"
    return code if code in REPLY_CODES else "internal"
