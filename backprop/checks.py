"""Checks of scalar arguments, shared by layers, optimizers, schedules and fit.

Each returns the value converted (int or float) or raises before anything changes: TypeError
when the kind is wrong, ValueError when the value is out of range, both naming the argument,
what was expected and what came.
"""

from __future__ import annotations

import math
import numbers
import re

import numpy as np


def check_int(name: str, value, minimum: int = 1, wanted: str | None = None) -> int:
    """`value` as an int >= minimum. `wanted` words the expectation ("a positive integer")."""
    wanted = wanted or f"an integer >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {wanted}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be {wanted}, got {value}")
    return int(value)


def check_real(name: str, value, low: float = 0.0, high: float = math.inf, high_open: bool = False,
               low_open: bool = False) -> float:
    """`value` as a finite float in [low, high]; `low_open`/`high_open` exclude that end
    ("a finite number > 0": low_open=True)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    above = value >= high if high_open else value > high
    below = value <= low if low_open else value < low
    if not math.isfinite(value) or below or above:
        if high == math.inf:
            wanted = f"a finite number {'>' if low_open else '>='} {low}"
        else:
            wanted = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be {wanted}, got {value}")
    return value


def check_bool(name: str, value) -> bool:
    """`value` as a bool: True or False (NumPy's too), nothing else."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


class NotRegisteredError(ValueError):
    """A layer type or activation named (by a caller or a checkpoint) that this process has not
    registered: the name may be right, and the module that registers it not yet imported."""


# A registered name (a layer's, an activation's) is what a checkpoint records and a loading
# process looks up: one or more ASCII identifiers joined by dots ("Recenter", "tests.Scale"),
# so it prints on one line, survives JSON and shells, and never hides a control character.
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
NAME_MAX_LENGTH = 100


def check_name(what: str, value, lowercase: bool = False) -> str:
    """`value` as a registered name (see NAME_PATTERN), at most NAME_MAX_LENGTH characters;
    `lowercase` where names are looked up case-insensitively (activations)."""
    wanted = ("ASCII letters, digits and underscores, in parts joined by dots, each part starting with a "
              f"letter or underscore, at most {NAME_MAX_LENGTH} characters")
    if lowercase:
        wanted = "lowercase " + wanted
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string of {wanted}, got {type(value).__name__} {value!r}")
    if (len(value) > NAME_MAX_LENGTH or not NAME_PATTERN.fullmatch(value)
            or (lowercase and value != value.lower())):
        raise ValueError(f"{what} must be {wanted}, got {value!r}")
    return value
