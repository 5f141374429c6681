# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Parsing of switch options given on a command line or as bundle overrides.

``python -m monai.bundle run ... --overwrite false`` (python-fire) hands the *string* ``'false'`` to the config, and
``bool('false')`` is ``True``: a run asked not to overwrite would replace a trained model. Every switch of the
package and of its bundles goes through :func:`as_bool`, which accepts real booleans and the usual spellings and
refuses anything else with a one-line error naming the option.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TRUE_WORDS", "FALSE_WORDS", "as_bool"]

TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


def as_bool(value: Any, name: str = "option") -> bool:
    """A switch value as a bool: ``True``/``False``, 0/1, or ``true/false/1/0/yes/no/on/off`` (any case).

    Args:
        value: the value given (a bool, an int 0/1, or a string).
        name: the option's name, used in the error message.

    Returns:
        the boolean.

    Raises:
        ValueError: any other value (``None``, ``2``, ``'maybe'``, ...), naming the option and the accepted words.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise ValueError(f"--{name}: expected true or false (or 1/0, yes/no), got {value!r}.")
