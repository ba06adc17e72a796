"""Devices: naming one and checking it exists here, the device of a module, seeded draws, timing.

invdiff's convention (``DESIGN.md``): device and dtype follow the measurement ``y``; random
numbers are drawn from the seeded generator *on the generator's device* (the CPU for
``torch.Generator()``) and then moved to the device of the data, so one seed gives the same
draws on every device and a run on a GPU can be compared with a run on the CPU number by number
(up to the devices' floating-point rounding). :func:`randn`, :func:`rand` and
:func:`multinomial` are those draws; every random number of a solve goes through them.

CUDA runs asynchronously: a wall-clock time taken around GPU work without waiting for it
measures only the launch of its kernels. :func:`synchronize` waits for the queued work of a
tensor's device (nothing on the CPU); the solve loop and the network-call counter use it.
"""

from __future__ import annotations

import torch

__all__ = ["available_devices", "resolve_device", "module_device", "randn", "rand", "multinomial", "synchronize",
           "device_name"]


def available_devices() -> list[str]:
    """The devices torch can compute on in this process: ``cpu``, then ``cuda:0``, ``cuda:1``, … and
    ``mps`` where present."""
    names = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def resolve_device(device, *, name: str = "device") -> torch.device:
    """The torch device ``device`` (a name such as ``"cpu"``, ``"cuda"``, ``"cuda:1"``, or a
    :class:`torch.device`), checked to be usable in this process.

    Parameters
    ----------
    device : str or torch.device
        The device to check.
    name : str
        How the caller calls it in messages (``"--device"`` for the command line).

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        Naming ``device`` and the devices available here: a string torch does not read as a
        device, the ``meta`` device (it holds no values), a CUDA device on a machine without CUDA
        or with fewer GPUs, or any other device that cannot hold a tensor here.
    """
    available = ", ".join(available_devices())
    if isinstance(device, bool) or not isinstance(device, (str, torch.device)) or device == "":
        raise ValueError(f"{name} must be a torch device name such as 'cpu' or 'cuda', got {device!r}; "
                         f"available here: {available}")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"{name} {str(device)!r} is not a torch device name (such as 'cpu', 'cuda' or 'cuda:1'); "
                         f"available here: {available}") from None
    if dev.type == "meta":
        raise ValueError(f"{name} 'meta' holds shapes but no values, so nothing can be computed on it; "
                         f"available here: {available}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name} {str(device)!r}: CUDA is not available on this machine "
                             f"(torch.cuda.is_available() is False); available here: {available}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{name} {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                             f"(numbered from 0); available here: {available}")
        return dev
    if dev.type != "cpu":
        try:
            torch.empty(0, device=dev)
        except (RuntimeError, AssertionError) as err:
            why = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise ValueError(f"{name} {str(device)!r} is not available on this machine ({why}); "
                             f"available here: {available}") from None
    return dev


def device_name(device) -> str:
    """A readable name of ``device`` for reports: the GPU's model for CUDA (e.g. ``"NVIDIA H200"``),
    ``"cpu"`` otherwise."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return dev.type


def module_device(module, default="cpu") -> torch.device:
    """The device of the first parameter or buffer of ``module`` (an ``nn.Module``: a prior, a deepinv
    operator), or ``default`` when it holds none (or is not a module)."""
    if isinstance(module, torch.nn.Module):
        for t in module.parameters():
            return t.device
        for t in module.buffers():
            return t.device
    return torch.device(default)


def _draw_device(generator: torch.Generator | None) -> torch.device:
    return torch.device("cpu") if generator is None else generator.device


def randn(shape, *, generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
          device=None) -> torch.Tensor:
    """Standard normal numbers of ``shape`` drawn from ``generator`` on its device (the CPU without
    one), returned on ``device`` (default: the generator's)."""
    out = torch.randn(tuple(shape), generator=generator, dtype=dtype, device=_draw_device(generator))
    return out if device is None else out.to(device)


def rand(shape, *, generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
         device=None) -> torch.Tensor:
    """Uniform numbers in [0, 1) of ``shape``, drawn as :func:`randn` draws."""
    out = torch.rand(tuple(shape), generator=generator, dtype=dtype, device=_draw_device(generator))
    return out if device is None else out.to(device)


def multinomial(weights: torch.Tensor, num_samples: int, *, replacement: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """``torch.multinomial(weights, num_samples, replacement)`` drawn on the generator's device and
    returned on the device of ``weights`` (``weights`` is not modified)."""
    out = torch.multinomial(weights.to(_draw_device(generator)), num_samples, replacement=replacement,
                            generator=generator)
    return out.to(weights.device)


def synchronize(device) -> None:
    """Wait until the queued work of ``device`` (a device or a tensor on it) has finished: CUDA
    kernels run asynchronously, so a wall-clock time needs this before it is read. Nothing to wait
    for on the CPU."""
    dev = device.device if isinstance(device, torch.Tensor) else torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
