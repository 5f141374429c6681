# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""Parsing of switch options given on a command line or as bundle overrides.

``python -m monai.bundle run ... --overwrite false`` (python-fire) hands the *string* ``'false'`` to the config, and
``bool('false')`` is ``True``: a run asked not to overwrite would replace a trained model. Every switch of the
package and of its bundles goes through :func:`as_bool`, which accepts real booleans and the usual spellings and
refuses anything else with a one-line error naming the option; counts (``--steps``, ``--samples``, ...) go
through :func:`positive_int`, real numbers (a probability, a scale) through :func:`as_float`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from monai_tfm.utils.errors import MonaiTFMError

__all__ = ["TRUE_WORDS", "FALSE_WORDS", "as_bool", "as_float", "positive_int", "per_sample_list"]

TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


def as_bool(value: Any, name: str = "option", error: type[Exception] = MonaiTFMError) -> bool:
    """A switch value as a bool: ``True``/``False``, 0/1, or ``true/false/1/0/yes/no/on/off`` (any case).

    Args:
        value: the value given (a bool, an int 0/1, or a string).
        name: the option's name, used in the error message.
        error: the exception class raised (a ``ValueError`` subclass of the caller, e.g. ``GenerationError``).

    Returns:
        the boolean.

    Raises:
        ValueError: (``error``) any other value (``None``, ``2``, ``'maybe'``, ...), naming the option and the
            accepted words.
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
    raise error(f"--{name}: expected true or false (or 1/0, yes/no), got {value!r}.")


def _number(value: Any) -> float | None:
    """``value`` as a float (a number or its text), or None for anything else (a bool, a word, None)."""
    if isinstance(value, bool):
        return None
    try:
        return float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def as_float(value: Any, name: str = "option", error: type[Exception] = MonaiTFMError) -> float:
    """A real-number option as a finite float: ``0.5`` or ``"0.5"``; not ``True``, ``"half"``, ``nan`` or ``inf``.

    Args:
        value: the value given (from the command line: a number or a string).
        name: the option's name, used in the error message.
        error: the exception class raised.

    Returns:
        the number.

    Raises:
        ValueError: (``error``) anything that is not a finite number, naming the option.
    """
    number = _number(value)
    if number is None or not math.isfinite(number):
        raise error(f"--{name} must be a number, got {value!r}.")
    return number


def positive_int(value: Any, name: str = "option", error: type[Exception] = MonaiTFMError) -> int:
    """A count option as an int >= 1: ``3``, ``3.0`` or ``"3"``; not ``2.5``, ``0``, ``True`` or ``"three"``.

    Args:
        value: the value given (from the command line: an int, a float or a string).
        name: the option's name, used in the error message.
        error: the exception class raised.

    Returns:
        the integer.

    Raises:
        ValueError: (``error``) anything that is not a whole number >= 1, naming the option.
    """
    number = _number(value)
    if number is None or not math.isfinite(number) or not number.is_integer() or number < 1:
        raise error(f"--{name} must be a positive integer, got {value!r}.")
    return int(number)


def per_sample_list(value: Any, n: int) -> list:
    """A collated batch entry (``subject``, ``draw``, a time) as one value per sample of a batch of ``n``.

    Args:
        value: None, a tensor (``n`` elements, or one shared by all), a list/tuple, or one value for all samples.
        n: the batch size.

    Returns:
        a list of ``n`` values (``None`` each when ``value`` is None).
    """
    if value is None:
        return [None] * n
    if isinstance(value, torch.Tensor):
        return value.reshape(-1).tolist() if value.numel() == n else [value.item()] * n
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value] * n
