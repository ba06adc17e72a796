"""How many CPU threads torch should use: the cores this process may run on that are idle.

torch's intra-op threads meet at a barrier after every parallel operation, and a thread whose
core is taken by another process makes all of them wait (they spin in OpenMP's active wait
meanwhile). On a shared machine torch's default — one thread per core — is then far slower
than one thread (``benchmarks/threads.py`` measures it). The rule here:

.. math:: n = \\max\\big(1,\\ \\operatorname{round}(c - \\ell)\\big), \\quad
          c = \\#\\text{CPUs this process may use},\\ \\ell = \\text{cores busy now}

(``ℓ`` clipped to ``[0, c]``). ``ℓ`` is read from the per-CPU lines of ``/proc/stat`` over a
quarter second, for this process's CPUs only, where Linux has them (the 1-minute load average
lags a neighbour that has just started), and is the load average elsewhere. It is read once,
when a command starts. ``OMP_NUM_THREADS``, where set (``torchrun`` sets 1 per rank), takes
precedence; a user who knows better sets ``--threads N`` (``0``: this rule).
"""

from __future__ import annotations

import os

__all__ = ["available_cpus", "auto_threads", "set_threads"]


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one, else all)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def _busy_cores(window: float = 0.25) -> float | None:
    """Cores of this process's CPU set busy right now, from two reads of the per-core lines of
    ``/proc/stat`` ``window`` seconds apart (Linux); ``None`` where there is no ``/proc/stat``."""
    import time

    try:
        mine = os.sched_getaffinity(0)
    except (AttributeError, OSError):  # pragma: no cover - no affinity on this OS
        mine = None

    def read():
        out = {}
        with open("/proc/stat") as f:
            for line in f:
                name, *values = line.split()
                if name.startswith("cpu") and name[3:].isdigit() and (mine is None or int(name[3:]) in mine):
                    fields = [float(v) for v in values[:8]]  # guest time is already inside user and nice
                    out[name] = (sum(fields), fields[3] + (fields[4] if len(fields) > 4 else 0.0))
        return out

    try:
        own0, wall0 = time.process_time(), time.perf_counter()
        first = read()
        time.sleep(window)
        second = read()
        own, wall = time.process_time() - own0, time.perf_counter() - wall0
    except (OSError, ValueError, IndexError):
        return None
    busy, seen = 0.0, 0
    for name, (t1, i1) in second.items():
        if name in first and t1 > first[name][0]:
            t0, i0 = first[name]
            busy += 1 - (i1 - i0) / (t1 - t0)
            seen += 1
    # this process's own threads (torch's pool winding down after imports) are not a neighbour
    own_share = own / wall if wall >= 0.05 else 0.0  # too short a window to tell
    return max(busy - own_share, 0.0) if seen else None


def auto_threads(load: float | None = None, cpus: int | None = None) -> int:
    """``max(1, round(cpus − load))``: the idle cores. ``load`` defaults to the cores busy now
    (``/proc/stat`` over a quarter second; the 1-minute load average where there is none: it lags
    a neighbour that has just started), ``cpus`` to :func:`available_cpus`."""
    cpus = available_cpus() if cpus is None else int(cpus)
    if load is None:
        load = _busy_cores()
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # pragma: no cover - no load average on this OS
            load = 0.0
    load = min(max(float(load), 0.0), float(cpus))
    return max(1, int(round(cpus - load)))


def set_threads(n: int = 0) -> int:
    """Set torch's intra-op threads to ``n`` (``0``: :func:`auto_threads`, unless ``OMP_NUM_THREADS``
    is set — by the user, or by ``torchrun`` for each rank — which then stands) and return the
    number in use.

    ``ValueError`` for a negative or non-integer ``n``.
    """
    import torch

    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"--threads must be an integer >= 0 (0: the idle cores, see invdiff.threads), got {n!r}")
    if n == 0 and os.environ.get("OMP_NUM_THREADS", "").strip():
        # the user or the launcher decided (torchrun sets 1 per rank): every rank reading the same idle
        # cores would otherwise take them all, ranks × cores threads in all
        return torch.get_num_threads()
    n = n or auto_threads()
    torch.set_num_threads(n)
    return n
