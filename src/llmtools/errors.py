"""Exception classes and the exit codes every command shares (see README, "Exit codes")."""

from __future__ import annotations

import importlib
from enum import IntEnum
from types import ModuleType


class ExitCode(IntEnum):
    """The exit status of every command; `meaning` is what the man pages say about it."""

    OK = 0
    FAILURE = 1  # runtime failure, or a gate failed (score --fail-under, watch --once alert)
    USAGE = 2  # bad options or arguments
    BAD_INPUT = 3  # bad input data (on-error=fail)
    MISSING = 4  # a missing optional dependency, model or data file
    INTERRUPTED = 130  # SIGINT

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


_MEANINGS = {
    ExitCode.OK: "success",
    ExitCode.FAILURE: "runtime failure, or a gate failed (--fail-under, --max-ppl-increase, watch --once alert)",
    ExitCode.USAGE: "usage error: bad option or argument",
    ExitCode.BAD_INPUT: "bad input data (invalid JSON, not an object, invalid UTF-8, nested too deeply, missing or non-string field, corrupt .gz)",
    ExitCode.MISSING: "a missing optional dependency, model or data file; the message says what to install",
    ExitCode.INTERRUPTED: "interrupted (SIGINT)",
}


class LLMToolsError(Exception):
    """An error meant for the user: one line on stderr, then exit with `exit_code`."""

    exit_code: int = ExitCode.FAILURE

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class RuntimeFailure(LLMToolsError):
    exit_code = ExitCode.FAILURE


class GateFailed(LLMToolsError):
    """A quality gate failed (score --fail-under, quantize --max-ppl-increase, watch --once)."""

    exit_code = ExitCode.FAILURE


class UsageError(LLMToolsError):
    exit_code = ExitCode.USAGE


class BadInputError(LLMToolsError):
    """Bad input data. `where` is "source:line" when known."""

    exit_code = ExitCode.BAD_INPUT

    def __init__(self, message: str, where: str | None = None):
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where
        self.reason = message


class MissingDependency(LLMToolsError):
    """An optional package, model or data file is not installed."""

    exit_code = ExitCode.MISSING


EXTRA_HINT = {
    "train": "pip install 'llmtools[train]'",
    "gguf": "pip install 'llmtools[gguf]'",
    "serve": "pip install 'llmtools[serve]'",
    "embed": "pip install 'llmtools[embed]'",
    "redis": "pip install 'llmtools[redis]'",
    "parquet": "pip install 'llmtools[parquet]'",
    "spark": "pip install 'llmtools[spark]'",
    "track": "pip install 'llmtools[track]'",
}


def require(module: str, extra: str | None = None, purpose: str | None = None) -> ModuleType:
    """Import `module` or raise MissingDependency (exit 4) naming the pip command to run."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = EXTRA_HINT.get(extra or "", f"pip install {module.split('.')[0]}")
        what = f" (needed for {purpose})" if purpose else ""
        raise MissingDependency(f"missing dependency '{module}'{what}: {exc}. Install it with: {hint}") from exc
