# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Expected user errors: how they are found in an exception chain and shown as one line.

MONAI's bundle runner wraps an error raised inside a config expression in ``RuntimeError("Failed to evaluate
ConfigExpression ...")``, so the package's one-line messages (a run folder that exists, a missing frame, ...) end a
70-100 line traceback. ``monai-tfm`` unwraps the chain and prints the user error alone; for ``python -m monai.bundle
run``, :func:`install_user_error_hook` (installed by :func:`monai_tfm.utils.setup_logging`, which every bundle calls
in ``initialize``) logs the same line at ERROR level before the traceback is printed.
"""

from __future__ import annotations

import logging
import sys
from types import TracebackType
from typing import Any

__all__ = ["MonaiTFMError", "USER_ERRORS", "one_line", "user_error_in_chain", "install_user_error_hook"]


class MonaiTFMError(ValueError):
    """An error the package raises on purpose, with a message for the user: bad input, a config value, a file.

    Every user error of the package derives from it (``ForecastError``, ``DatalistError``, ``PackError``,
    ``GenerationError``, ``SeriesReadError``, ``CLIError``) or is raised as it, so ``monai-tfm`` prints it as one line
    (exit code 2) while anything else, a bug, keeps its traceback (exit code 1). A ``ValueError`` subclass, so callers
    that catch ``ValueError`` keep working.
    """


# the exception types whose message is meant for the user: the package's errors and the file errors it raises
USER_ERRORS: tuple[type[BaseException], ...] = (MonaiTFMError, FileNotFoundError, FileExistsError)


def one_line(text: Any, limit: int = 300) -> str:
    """Collapse a (reader's multi-line) message into one line of at most ``limit`` characters.

    Args:
        text: the message (or an exception).
        limit: maximum length; longer lines end in ``...``.

    Returns:
        the line.
    """
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def user_error_in_chain(
    error: BaseException | None, kinds: tuple[type[BaseException], ...] = USER_ERRORS
) -> BaseException | None:
    """The first expected user error in an exception's cause/context chain.

    Args:
        error: the exception that was raised.
        kinds: the exception types that count as user errors.

    Returns:
        that error (``error`` itself if it is one), or ``None``.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kinds):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def install_user_error_hook() -> None:
    """Log the user error of an uncaught exception as one ERROR line, then print the traceback as before.

    Wraps ``sys.excepthook`` once per process; exceptions without a user error in their chain are printed unchanged.
    """
    previous = sys.excepthook
    if getattr(previous, "_monai_tfm", False):
        return

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        user_error = user_error_in_chain(exc)
        if user_error is not None:
            logging.getLogger("monai_tfm").error("%s", one_line(user_error))
        previous(exc_type, exc, tb)

    hook._monai_tfm = True  # type: ignore[attr-defined]
    sys.excepthook = hook
