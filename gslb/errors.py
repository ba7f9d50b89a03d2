"""The one exception tree of gslb (only cli.py maps these to exit codes), and how errors show a file."""

from __future__ import annotations

import os


class GslbError(Exception):
    """gslb error."""


class ConfigError(GslbError):
    """A located error in a configuration or zone file: ``PATH:LINE: field: message``."""

    def __init__(self, file: str, line: int | None, path: str, message: str) -> None:
        self.file = file
        self.line = line
        self.path = path
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        field = f"{self.path}: " if self.path else ""
        return f"{where}: {field}{self.message}"


class ConfigErrors(GslbError):
    """Every error found in one or more files, reported at once."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


class GeoDatabaseError(GslbError):
    """The GeoIP database cannot be opened or read."""


class StartupError(GslbError):
    """The server cannot start (port in use, unreadable database, ...)."""


class UsageError(ConfigErrors):
    """Bad command-line flag values (exit 2); each error names its flag."""


def display_path(path: str) -> str:
    """``path`` as messages show it: relative to the working directory when it is below it."""
    if not os.path.isabs(path):
        return path
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel
