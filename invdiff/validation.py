"""Argument checks shared by every public entry point: each names the argument and what was expected.

Integers must be integers (not ``2.5``, not ``True``, not ``"64"``), real numbers finite and in
range, tensors real; generators ``torch.Generator`` or ``None``. Used where arguments enter —
operator factories, priors, training — so a bad value fails there, with its name, rather than
deep inside torch.
"""

from __future__ import annotations

import math
import operator

import torch

__all__ = ["as_integer", "img_size_3d", "positive_int", "real_number", "real_tensor", "check_generator"]


def as_integer(value) -> int | None:
    """``value`` as a Python int if it is an integer (``int``, NumPy integer, one-element integer
    tensor), else ``None``. Bools, floats (even ``64.0``) and strings are not integers."""
    if isinstance(value, (bool, str, bytes)) or type(value).__name__ == "bool_":
        return None
    if isinstance(value, torch.Tensor) and (value.dtype == torch.bool or value.is_floating_point()
                                            or value.is_complex()):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def img_size_3d(img_size, name: str = "img_size") -> tuple[int, int, int]:
    """Normalise an image size to ``(C, H, W)``.

    Parameters
    ----------
    img_size : int, (H, W) or (C, H, W)
        Integers >= 1 (Python or NumPy integers); an int ``n`` means ``(1, n, n)``.
    name : str
        Public name of the argument, used in error messages.

    Returns
    -------
    tuple of int
        ``(C, H, W)``.

    Raises
    ------
    TypeError
        ``img_size`` is a string, a bool, a float (even ``64.0``), not a sequence, or has an
        entry that is not an integer.
    ValueError
        ``img_size`` has not 2 or 3 entries, or an entry < 1.
    """
    expected = f"{name} must be an int, (H, W) or (C, H, W) of integers >= 1"
    if isinstance(img_size, (str, bytes)):
        raise TypeError(f"{expected}, got the string {img_size!r}")
    n = as_integer(img_size)
    if n is not None:
        size = (1, n, n)
    else:
        if isinstance(img_size, torch.Tensor) and img_size.ndim == 0:
            raise TypeError(f"{expected}, got a {img_size.dtype} scalar tensor")
        try:
            entries = list(img_size)
        except TypeError:
            raise TypeError(f"{expected}, got {type(img_size).__name__} {img_size!r}") from None
        ints = [as_integer(v) for v in entries]
        if None in ints:
            bad = entries[ints.index(None)]
            raise TypeError(f"{expected}, got {img_size!r} (entry {bad!r} of type {type(bad).__name__} "
                            f"is not an integer)")
        if len(ints) not in (2, 3):
            raise ValueError(f"{expected}, got {len(ints)} entries: {img_size!r}")
        size = tuple(ints) if len(ints) == 3 else (1,) + tuple(ints)
    if min(size) < 1:
        raise ValueError(f"{expected}, got {img_size!r}")
    return size


def positive_int(value, name: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``.

    Raises
    ------
    TypeError
        ``value`` is not an integer (a bool, a float such as ``8.0``, a string, ``None``).
    ValueError
        ``value`` is smaller than ``minimum``.
    """
    n = as_integer(value)
    if n is None:
        raise TypeError(f"{name} must be an integer >= {minimum}, got {type(value).__name__} {value!r}")
    if n < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return n


def real_number(value, name: str, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float, optionally in an interval.

    Parameters
    ----------
    value : int, float, NumPy number or one-element real tensor
        Bools, strings and complex numbers are refused.
    name : str
        Public name of the argument, used in error messages.
    low, high : float, optional
        Bounds of the interval; ``low_open``/``high_open`` exclude them.

    Raises
    ------
    TypeError
        ``value`` is not a real number.
    ValueError
        ``value`` is NaN, infinite or outside the interval.
    """
    bad_type = isinstance(value, (bool, str, bytes, complex)) or type(value).__name__ == "bool_"
    if isinstance(value, torch.Tensor):
        bad_type = bad_type or value.numel() != 1 or value.dtype == torch.bool or value.is_complex()
    if not bad_type:
        try:
            v = float(value)
        except (TypeError, ValueError):
            bad_type = True
    if bad_type:
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
    hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
    where = f" in {lo}, {hi}" if low is not None and high is not None else (
        f" {'>' if low_open else '>='} {low:g}" if low is not None else
        f" {'<' if high_open else '<='} {high:g}" if high is not None else "")
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number{where}, got {value!r}")
    if low is not None and (v < low or (low_open and v == low)):
        raise ValueError(f"{name} must be a finite number{where}, got {value!r}")
    if high is not None and (v > high or (high_open and v == high)):
        raise ValueError(f"{name} must be a finite number{where}, got {value!r}")
    return v


def real_tensor(value, name: str, *, dtype=torch.float32, allow_bool: bool = False) -> torch.Tensor:
    """``value`` (tensor, array or nested sequence of real numbers) as a finite tensor of ``dtype``.

    Integer entries are converted exactly; bools only with ``allow_bool`` (masks). Complex
    values raise ``TypeError`` instead of silently losing their imaginary part; NaN or Inf
    entries raise ``ValueError``.
    """
    if value is None or isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a tensor or array of real numbers, got {type(value).__name__}")
    try:
        t = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a tensor or array of real numbers, got {type(value).__name__}") from None
    if t.is_complex():
        raise TypeError(f"{name} must be real, got a complex tensor ({t.dtype}); its imaginary part would be "
                        f"dropped")
    if t.dtype == torch.bool and not allow_bool:
        raise TypeError(f"{name} must hold real numbers, got a bool tensor")
    t = t.to(dtype)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or Inf values")
    return t


def check_generator(generator, name: str = "generator"):
    """``generator`` if it is ``None`` or a :class:`torch.Generator`, else ``TypeError``."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(generator).__name__}")
    return generator
