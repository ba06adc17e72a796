"""Small helpers on :mod:`torch.distributed` for runs launched by ``torchrun``, on one machine or many.

``torchrun`` starts one process per rank and tells each, in its environment, who it is
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and where the rendezvous store listens
(``MASTER_ADDR``, ``MASTER_PORT``). :func:`launch_info` reads and checks these variables,
:func:`init` forms the process group (gloo on the CPU; nccl when CUDA is requested and
available), and :func:`rank`, :func:`world_size`, :func:`barrier` and :func:`all_gather_object`
work with or without a process group: a plain process is rank 0 of 1. :func:`process_group`
forms the group when the process was launched that way, and tears it down on the way out.

A group that cannot form (a malformed environment, an unreachable rank 0, a rank that never
comes) raises :class:`DistributedError` with one line naming this rank and the cause.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch

__all__ = ["DistributedError", "PeerError", "Launch", "launch_info", "init", "is_initialized", "rank",
           "world_size", "barrier", "all_gather_object", "shutdown", "process_group", "LAUNCH_VARIABLES",
           "CONNECT_TIMEOUT", "COLLECTIVE_TIMEOUT", "take_next", "has_counters"]

#: The environment variables ``torchrun`` sets for every rank and that :func:`launch_info` reads.
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

#: Seconds a rank waits for the others when the group forms.
CONNECT_TIMEOUT = 300.0

#: Seconds a collective (barrier, gather) waits: long, because the ranks of a benchmark finish
#: their cells hours apart; a rank that dies ends the job through ``torchrun`` instead.
COLLECTIVE_TIMEOUT = 7 * 24 * 3600.0


_STORE = [None]  # the rendezvous store of the group formed by init()
_LOCAL: dict[str, int] = {}  # take_next's counters in a process without a group


class DistributedError(RuntimeError):
    """A process group that could not form or be used; the message is one line naming the rank."""


class PeerError(DistributedError):
    """Another rank (rank 0) stopped the run and said why; this rank only has to stop too."""


@dataclass(frozen=True)
class Launch:
    """Who this process is in a ``torchrun`` launch (see :func:`launch_info`)."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int


def launch_info(environ=None) -> Launch | None:
    """This process's place in a ``torchrun`` launch, read from the environment.

    Parameters
    ----------
    environ : mapping, optional
        The environment to read (default ``os.environ``); it is not modified.

    Returns
    -------
    Launch or None
        ``None`` when neither ``RANK`` nor ``WORLD_SIZE`` is set (not a distributed launch).

    Raises
    ------
    DistributedError
        A launch whose variables are missing or malformed (``RANK`` not below ``WORLD_SIZE``, a
        port outside 1–65535, ...), named in the message.
    """
    env = os.environ if environ is None else environ
    if "RANK" not in env and "WORLD_SIZE" not in env:
        return None
    where = f"rank {env.get('RANK', '?')}"
    missing = [v for v in LAUNCH_VARIABLES if v != "LOCAL_RANK" and not str(env.get(v, "")).strip()]
    if missing:
        raise DistributedError(f"{where}: not a complete torchrun launch: {', '.join(missing)} not set "
                               f"(torchrun sets {', '.join(LAUNCH_VARIABLES)})")
    values = {}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"):
        text = str(env.get(name, "0" if name == "LOCAL_RANK" else "")).strip()
        try:
            values[name] = int(text)
        except ValueError:
            raise DistributedError(f"{where}: {name}={text!r} is not an integer") from None
    if values["WORLD_SIZE"] < 1:
        raise DistributedError(f"{where}: WORLD_SIZE={values['WORLD_SIZE']} must be >= 1")
    if not 0 <= values["RANK"] < values["WORLD_SIZE"]:
        raise DistributedError(f"{where}: RANK={values['RANK']} must be in 0..WORLD_SIZE-1 "
                               f"(WORLD_SIZE={values['WORLD_SIZE']})")
    if values["LOCAL_RANK"] < 0:
        raise DistributedError(f"{where}: LOCAL_RANK={values['LOCAL_RANK']} must be >= 0")
    if not 0 < values["MASTER_PORT"] < 2**16:
        raise DistributedError(f"{where}: MASTER_PORT={values['MASTER_PORT']} is not a port (1-65535)")
    return Launch(rank=values["RANK"], world_size=values["WORLD_SIZE"], local_rank=values["LOCAL_RANK"],
                  master_addr=str(env["MASTER_ADDR"]).strip(), master_port=values["MASTER_PORT"])


def is_initialized() -> bool:
    """Whether a default process group exists in this process."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    """This process's rank in the default process group; 0 without one."""
    return torch.distributed.get_rank() if is_initialized() else 0


def world_size() -> int:
    """The number of ranks in the default process group; 1 without one."""
    return torch.distributed.get_world_size() if is_initialized() else 1


def init(*, cuda: bool = False, connect_timeout: float = CONNECT_TIMEOUT,
         timeout: float = COLLECTIVE_TIMEOUT) -> Launch:
    """Form the default process group of a ``torchrun`` launch (``env://`` rendezvous).

    Parameters
    ----------
    cuda : bool
        Use the nccl backend, each rank on GPU ``LOCAL_RANK``, when CUDA is available; otherwise
        (and by default) gloo on the CPU.
    connect_timeout : float
        Seconds to wait for rank 0's store and for every rank to join.
    timeout : float
        Seconds a collective may wait for the slowest rank.

    Returns
    -------
    Launch
        This process's place in the launch.

    Raises
    ------
    DistributedError
        Not launched by ``torchrun``, a malformed launch environment, a group already formed, or
        a group that did not form in time; one line naming the rank and the cause.
    """
    info = launch_info()
    if info is None:
        raise DistributedError("not a torchrun launch: RANK and WORLD_SIZE are not set")
    where = f"rank {info.rank} of {info.world_size}"
    if not torch.distributed.is_available():
        raise DistributedError(f"{where}: this torch build has no torch.distributed")
    if is_initialized():
        raise DistributedError(f"{where}: a process group is already initialised in this process")
    use_nccl = cuda and torch.cuda.is_available() and torch.distributed.is_nccl_available()
    backend = "nccl" if use_nccl else "gloo"
    if backend == "gloo" and not torch.distributed.is_gloo_available():
        raise DistributedError(f"{where}: this torch build has no gloo backend")
    if use_nccl:
        if info.local_rank >= torch.cuda.device_count():
            raise DistributedError(f"{where}: LOCAL_RANK={info.local_rank} but only "
                                   f"{torch.cuda.device_count()} GPU(s) on this machine")
        torch.cuda.set_device(info.local_rank)
    try:
        store, _, _ = next(torch.distributed.rendezvous("env://", timeout=timedelta(seconds=connect_timeout)))
        torch.distributed.init_process_group(backend, store=store, rank=info.rank, world_size=info.world_size,
                                             timeout=timedelta(seconds=timeout))
        _STORE[0] = store
    except Exception as err:  # noqa: BLE001 — store, backend and timeout errors of every kind: one line
        lines = str(err).strip().splitlines()
        cause = lines[0] if lines else ""
        raise DistributedError(f"{where}: the {backend} process group did not form with rank 0 at "
                               f"{info.master_addr}:{info.master_port} ({type(err).__name__}: {cause})") from None
    return info


def barrier() -> None:
    """Wait until every rank gets here (nothing to wait for without a process group)."""
    if is_initialized() and world_size() > 1:
        torch.distributed.barrier()


def all_gather_object(obj) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` without a process group."""
    if not is_initialized():
        return [obj]
    gathered = [None] * world_size()
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def has_counters() -> bool:
    """Whether :func:`take_next` can count across the ranks: a plain process, or a group formed by
    :func:`init` (whose rendezvous store holds the counters)."""
    return not is_initialized() or _STORE[0] is not None


def take_next(counter: str) -> int | None:
    """The next number (0, 1, 2, …) of the counter ``counter`` shared by every rank of the group.

    Each call, on any rank, gets a number no other call got (an atomic add in the rendezvous
    store of :func:`init`), so ranks that take work items by these numbers share them out as
    each becomes free. Returns ``None`` when the group was not formed by :func:`init` (no store
    to count in); a plain process counts alone, from 0.
    """
    if not is_initialized():
        _LOCAL[counter] = _LOCAL.get(counter, -1) + 1
        return _LOCAL[counter]
    if _STORE[0] is None:
        return None
    return int(_STORE[0].add(f"invdiff/{counter}", 1)) - 1


def shutdown() -> None:
    """Tear down the default process group if there is one."""
    if is_initialized():
        torch.distributed.destroy_process_group()
    _STORE[0] = None


@contextmanager
def process_group(**kwargs):
    """Form the process group when launched by ``torchrun``, and tear it down on the way out.

    A plain process (no ``RANK``/``WORLD_SIZE``) or one whose group is already formed gets
    nothing new. Keyword arguments go to :func:`init`.

    Yields
    ------
    Launch or None
        The launch, or ``None`` for a plain process.
    """
    info = launch_info()
    owned = info is not None and not is_initialized()
    if owned:
        init(**kwargs)
    try:
        yield info
    finally:
        if owned:
            shutdown()
