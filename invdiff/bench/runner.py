"""The benchmark's runner: (problem, method) cells on the same test images, resumable.

Each cell runs in its own spawned process (so its peak memory is its own) on the same ``n``
test images of its problem (one batch; measurement noise and sampler seeded by ``seed``).
``results.json`` is written atomically after every cell, so an interrupted run resumes where it
stopped; a folder made with other settings is refused. The method objects themselves travel to
the worker processes, so a method registered at run time (a new solver in ``SOLVERS``) runs
like a shipped one.

Many processes and machines. Under ``torchrun`` (a process group of several ranks, see
:mod:`invdiff.distributed`) rank 0 resumes the folder and decides the cells still to do; each rank
takes the next cell of that list whenever one of its ``jobs`` processes is free (a counter in
``torchrun``'s rendezvous store, :func:`invdiff.distributed.take_next`), so a rank that drew
cheap cells takes more of them and the ranks finish together. (A process group formed
without :func:`invdiff.distributed.init` has no such store: its cells are dealt round-robin
over the sorted keys, :func:`assign_cells`.) Rank 0 writes ``results.json`` after each of its
cells; every other rank ``k`` of ``N`` writes its finished cells atomically to
``results.rank-k-of-N.json`` after each one, so a killed job loses no finished cell. At the end
the ranks' records are gathered on rank 0, which alone writes ``results.json`` (merging the
shard files, then removing them), ``results.md`` and the figures. A job array runs
``shard=(k, N)`` in separate jobs instead: shard ``k`` takes its round-robin share of
*every* requested cell (:func:`assign_cells`) (independent jobs cannot agree on what is left), skips those already
finished anywhere in the folder, and writes only ``results.shard-k-of-N.json``;
:func:`merge_shards` folds the shard files into ``results.json`` and writes the report. Every
run — one process, ``torchrun`` or a later shard — first folds the shard files it finds, so
resuming after a killed job starts from every cell that finished. ``--out`` must be a folder
every rank can read and write (a shared file system across machines).
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import socket
import sys
import uuid
from pathlib import Path

import torch

from .. import distributed
from ..data.io import atomic_write
from ..methods import Method, default_methods, get_method
from .report import cell_key, save_figure, write_markdown
from .uncertainty import coverage_record

__all__ = ["run_bench", "not_applicable", "run_cell", "merge_shards", "assign_cells", "parse_shard",
           "shard_file", "SHARD_FILE"]

#: Names of the shard files: ``results.rank-K-of-N.json`` (rank K of a torchrun job of N ranks) and
#: ``results.shard-K-of-N.json`` (shard K of a job array of N, ``invdiff bench --shard K/N``).
SHARD_FILE = re.compile(r"results\.(rank|shard)-(\d+)-of-(\d+)\.json")


def not_applicable(method, spec, physics=None) -> str | None:
    """Why ``method`` cannot run on problem ``spec`` in the benchmark (``None`` when it can);
    ``physics`` is the problem's operator when the caller has built it already."""
    m = get_method(method)
    if spec.is_volume:
        return "volume problem (use benchmarks/mbir.py)"
    if m.volumes:
        return "couples the slices of a volume (volume problems only)"
    ok = m.applicable(spec.operator() if physics is None else physics)
    return None if ok is True else ok


def run_cell(problem: str, method: Method, n_images: int, seed: int, steps: int, threads: int, out_dir: str,
             device: str = "cpu") -> dict:
    """One cell (in its own process): returns its record; saves the first reconstruction for the figure.

    The method runs with the problem and the prior on ``device``; the measurement is made, and
    the scores and files are computed, on the CPU. The record names the device
    (:func:`invdiff.devices.device_name`), since its time per image depends on it."""
    import numpy as np

    from ..devices import device_name, resolve_device
    from ..metrics import psnr, ssim
    from ..problems import get_problem

    dev = resolve_device(device)
    torch.set_num_threads(threads)
    spec = get_problem(problem)
    n_images = spec.n_images(n_images)  # fewer where the problem's test split holds fewer
    pb = spec.make("test", n_images, seed=seed)
    prior = spec.build_prior().to(dev) if method.uses_prior else None
    res = method.run(pb.to(dev), prior, steps=steps, generator=torch.Generator().manual_seed(seed),
                     params=spec.presets.get(method.preset_key, {})).to("cpu")
    x = res.x_hat.clamp(0, 1)
    rec_dir = Path(out_dir) / "reconstructions" / problem
    rec_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(rec_dir / f"{method.name}.npy", lambda tmp: np.save(tmp, x[0].numpy()))
    uq = {}
    if res.std is not None:  # methods with samples: coverage of the std map, calibrated where the problem can
        calibration = spec.calibration(method.name)
        if calibration is not None and calibration.steps not in (None, steps):
            calibration = None  # fitted at another number of steps: its factors do not apply
        if calibration is not None:
            res = res.calibrated(calibration)
        uq = {"coverage": coverage_record(res, pb.x_true, spec.support(pb.x_true), calibration)}
        std = res.calibrated_std if calibration is not None else res.std  # the map the figure shows
        atomic_write(rec_dir / f"{method.name}.std.npy", lambda tmp: np.save(tmp, std[0].numpy()))
    atomic_write(rec_dir / "truth.npy", lambda tmp: np.save(tmp, pb.x_true[0].numpy()))
    return {"problem": problem, "method": method.name, "family": method.family,
            "psnr": psnr(x, pb.x_true).tolist(), "ssim": ssim(x, pb.x_true).tolist(),
            "n_images": n_images, "prior": spec.prior if method.uses_prior else None, "nfe": res.nfe, "vjp": res.vjp,
            "seconds_per_image": res.seconds / n_images,
            "network_seconds_per_image": res.network_seconds / n_images, "peak_memory_mb": res.peak_memory_mb, "params": res.params, "device": device_name(dev), **uq}



def shard_file(kind: str, index: int, count: int) -> str:
    """The name of a shard file: ``kind`` ``"rank"`` (a torchrun rank) or ``"shard"`` (a job-array task)."""
    if kind not in ("rank", "shard"):
        raise ValueError(f"kind must be 'rank' or 'shard', got {kind!r}")
    return f"results.{kind}-{index}-of-{count}.json"


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` (as given to ``invdiff bench --shard``) as ``(K, N)``, with ``0 <= K < N``.

    Raises
    ------
    ValueError
        Text that is not two whole numbers around a slash, ``N < 1`` or ``K >= N``.
    """
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if m is None:
        raise ValueError(f"--shard must be K/N with whole numbers 0 <= K < N (e.g. 0/4), got {text!r}")
    return _check_shard((int(m[1]), int(m[2])))


def _check_shard(shard) -> tuple[int, int]:
    try:
        index, count = shard
    except (TypeError, ValueError):
        raise ValueError(f"shard must be a pair (K, N), got {shard!r}") from None
    if any(isinstance(v, bool) or not isinstance(v, int) for v in (index, count)):
        raise ValueError(f"shard must be a pair of integers (K, N), got {shard!r}")
    if count < 1:
        raise ValueError(f"shard {index}/{count}: the number of shards N must be >= 1")
    if not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: K must be in 0..{count - 1} (shards are numbered from 0)")
    return index, count


def assign_cells(keys, index: int, count: int) -> list[str]:
    """The cells of shard (or rank) ``index`` of ``count``: round-robin over the sorted cell keys.

    Parameters
    ----------
    keys : iterable of str
        Cell keys (:func:`~invdiff.bench.report.cell_key`); their order does not matter.
    index, count : int
        This shard and the number of shards, ``0 <= index < count``.

    Returns
    -------
    list of str
        ``sorted(keys)[index::count]``: every key goes to exactly one shard, whatever the order
        the keys came in, and the shards' sizes differ by at most one.
    """
    index, count = _check_shard((index, count))
    return sorted(set(keys))[index::count]


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a results file written by invdiff bench ({err}); "
                         f"choose another --out") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells", {}), dict):
        raise ValueError(f"{path} is not a results file written by invdiff bench (no cells); choose another --out")
    return data


def _config_diff(found: dict, expected: dict) -> list[tuple[str, object, object]]:
    """(setting, value in ``found``, value in ``expected``) for every setting that differs."""
    return [(k, found.get(k), v) for k, v in expected.items() if found.get(k) != v] + \
        [(k, v, None) for k, v in found.items() if k not in expected]


def _load_results(path: Path, config: dict) -> dict:
    if not path.is_file():
        return {"config": config, "cells": {}}
    data = _read_json(path)
    diff = _config_diff(data.get("config", {}), config)
    if diff:
        shown = ", ".join(f"{k} {a!r} there vs {b!r} now" for k, a, b in diff)
        raise ValueError(f"{path} was made with other settings ({shown}); use another --out to start afresh")
    return _without_stale(data, path)


def stale_reason(cell: dict) -> str | None:
    """Why a recorded cell no longer stands for its (problem, method), or ``None`` where it does:
    a method that uses a prior, recorded with another prior than the problem's current one (or,
    from before cells named their prior, with none recorded)."""
    from ..problems import PROBLEMS

    spec = PROBLEMS.get(cell.get("problem"))
    if spec is None or "not_applicable" in cell:
        return None
    try:
        uses_prior = get_method(cell["method"]).uses_prior
    except (KeyError, ValueError):
        return None
    if uses_prior and cell.get("prior") != spec.prior:
        return f"made with prior {cell.get('prior') or '(not recorded)'}, the problem's prior is now {spec.prior}"
    return None


def _without_stale(data: dict, path: Path) -> dict:
    """``data`` without its stale cells (:func:`stale_reason`), which are therefore run again; says which."""
    stale = {key: why for key, cell in data["cells"].items() if (why := stale_reason(cell))}
    if not stale:
        return data
    print(f"{path}: {len(stale)} cell(s) will run again: " + "; ".join(f"{k} ({why})" for k, why in stale.items()),
          file=sys.stderr, flush=True)
    return {**data, "cells": {k: c for k, c in data["cells"].items() if k not in stale}}


def _shard_files(out_dir: Path) -> list[Path]:
    """The shard files in ``out_dir``, ranks before shards, then by N and K."""
    found = [(m[1], int(m[3]), int(m[2]), p) for p in (out_dir.iterdir() if out_dir.is_dir() else ())
             if (m := SHARD_FILE.fullmatch(p.name))]
    return [p for *_, p in sorted(found)]


def _read_shard(path: Path, config: dict, against: Path | None = None) -> dict:
    """A shard file, refused when made with other settings than ``config`` (that of ``against``, or of this run)."""
    data = _read_json(path)
    diff = _config_diff(data.get("config", {}), config)
    if diff and against is None:
        shown = ", ".join(f"{k} {a!r} there vs {b!r} now" for k, a, b in diff)
        raise ValueError(f"{path} was made with other settings ({shown}); use another --out to start afresh")
    if diff:
        shown = ", ".join(f"{k} {a!r} vs {b!r}" for k, a, b in diff)
        raise ValueError(f"{path.name} and {against.name} in {path.parent} were made with different settings "
                         f"({shown}); merge only the shards of one command")
    return _without_stale(data, path)


def _fold(data: dict, shards) -> dict:
    """A new results dictionary: ``data``'s cells, then each shard's cells that are not in it yet.

    A cell already recorded is never replaced (cells are seeded: a second record of it holds the
    same numbers); the commands and the ``ran_by`` notes of the shards are added.
    """
    merged = {**data, "cells": dict(data["cells"])}
    ran_by = dict(data.get("ran_by", {}))
    commands = list(data.get("commands", []))
    for shard in shards:
        for key, rec in shard["cells"].items():
            if key not in merged["cells"]:
                merged["cells"][key] = rec
                if key in shard.get("ran_by", {}):
                    ran_by[key] = shard["ran_by"][key]
        commands += [c for c in shard.get("commands", []) if c not in commands]
    if ran_by:
        merged["ran_by"] = ran_by
    if commands:
        merged["commands"] = commands
    return merged


def _load_folder(out_dir: Path, config: dict) -> tuple[dict, list[Path]]:
    """``results.json`` with every shard file of the folder folded in, and the shard files read."""
    paths = _shard_files(out_dir)
    return _fold(_load_results(out_dir / "results.json", config), [_read_shard(p, config) for p in paths]), paths


def _remove(paths) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def _save_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1)))


def _resolve(problems, methods, **counts):
    """Problem specs and Method objects of a run, after checking its counts."""
    from ..problems import get_problem

    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    specs = [get_problem(p) for p in problems]
    chosen = [get_method(m) for m in (default_methods() if methods is None else methods)]
    return specs, chosen


def _plan(specs, chosen, *, check: bool = True) -> dict:
    """Every requested cell in request order: key -> (problem, method, why not applicable or None).

    ``check=False`` skips the applicability checks (every reason ``None``).
    """
    plan = {}
    for spec in specs:
        physics = None if spec.is_volume or not check else spec.operator()  # built once per problem
        for m in chosen:
            plan[cell_key(spec.name, m.name)] = (spec.name, m, not_applicable(m, spec, physics) if check else None)
    return plan


def _not_applicable_record(problem: str, method: Method, reason: str) -> dict:
    return {"problem": problem, "method": method.name, "family": method.family, "not_applicable": reason}


def _run_cells(cells, record, *, n_images, seed, steps, threads, jobs, out_dir, progress, desc,
               device="cpu") -> None:
    """Run ``cells`` [(problem, Method)] in a pool of ``jobs`` spawned processes, one process per
    cell; ``record(key, rec)`` is called in this process as each cell finishes.

    ``cells`` may be any iterable: the next cell is taken from it only when a process is free
    (ranks taking cells from a shared counter rely on this)."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    from tqdm import tqdm

    source = iter(cells)
    first = next(source, None)
    if first is None:
        return
    source = itertools.chain([first], source)
    bar = tqdm(total=len(cells) if isinstance(cells, list) else None, disable=not progress, desc=desc)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=ctx, max_tasks_per_child=1) as pool:
        running = {}

        def start_one() -> None:
            cell = next(source, None)
            if cell is not None:
                p, m = cell
                running[pool.submit(run_cell, p, m, n_images, seed, steps, threads, str(out_dir), device)] = cell

        for _ in range(jobs):
            start_one()
        while running:
            fut = next(iter(wait(running, return_when=FIRST_COMPLETED)[0]))
            p, m = running.pop(fut)
            start_one()
            try:
                rec = fut.result()
                shown = f"{sum(rec['psnr']) / len(rec['psnr']):.2f} dB"
            except BrokenProcessPool:
                raise
            except Exception as err:  # a diverging or failing method is a result, not the end of the run
                rec = {"problem": p, "method": m.name, "family": m.family, "failed": f"{type(err).__name__}: {err}"}
                shown = "failed"
            record(cell_key(p, m.name), rec)
            bar.set_postfix_str(f"{p} {m.name}: {shown}")
            bar.update(1)
    bar.close()


def _write_report(data: dict, out_dir: Path) -> None:
    """``results.md`` and the figures, over every cell in the folder (from this run and earlier ones)."""
    from ..problems import PROBLEMS

    done = {c["problem"] for c in data["cells"].values()}
    names = [n for n in PROBLEMS if n in done]
    # one stable order whatever the runs: the default methods, then the others as first run
    present = list(dict.fromkeys(c["method"] for c in data["cells"].values()))
    defaults = default_methods()
    everything = [m for m in defaults if m in present] + [m for m in present if m not in defaults]
    write_markdown(data, out_dir / "results.md", problems=names, methods=everything)
    for name in names:
        save_figure(out_dir, name, [m for m in everything if "psnr" in data["cells"].get(cell_key(name, m), {})],
                    data=data)


def _with_command(data: dict, command: str | None) -> dict:
    if not command or command in data.get("commands", []):
        return data
    return {**data, "commands": data.get("commands", []) + [command]}


def run_bench(problems, methods=None, *, n_images: int = 8, seed: int = 0, steps: int = 100,
              out: str = "bench-results", jobs: int = 1, threads: int = 1, progress: bool = True,
              command: str | None = None, shard: tuple[int, int] | None = None, device: str = "cpu") -> dict:
    """Run every (problem, method) cell not already in ``out``; write the outputs.

    ``methods`` are names (``"diffpir"``, ``"diffpir:4"``, ``"tv"``, …) or :class:`~invdiff.methods.Method`
    objects; default :func:`invdiff.methods.default_methods`. Returns the results dictionary
    (also in ``results.json``); writes ``results.md`` and ``figures/<problem>.png``.

    In a process group of several ranks (``torchrun``, :mod:`invdiff.distributed`) the cells
    are spread over the ranks and only rank 0 writes those files; every rank returns the merged
    results. With ``shard=(k, n)`` only the cells of shard ``k`` of ``n`` run and only
    ``results.shard-k-of-n.json`` is written (its dictionary is returned); :func:`merge_shards`
    makes ``results.json`` from the shards. See the module's description.

    ``device`` is where every cell puts its problem and prior (checked here, before any cell
    runs: :func:`invdiff.devices.resolve_device`); each cell's record names it.
    """
    from ..devices import resolve_device

    resolve_device(device, name="--device")
    counts = {"n_images": n_images, "steps": steps, "jobs": jobs, "threads": threads}
    config = {"n_images": n_images, "seed": seed, "steps": steps, "split": "test"}
    options = {"n_images": n_images, "seed": seed, "steps": steps, "threads": threads, "jobs": jobs,
               "out_dir": Path(out), "device": device}
    if distributed.world_size() > 1:
        return _run_ranks(problems, methods, counts, config, options, progress=progress, command=command,
                          shard=shard)
    if shard is not None:
        shard = _check_shard(shard)
    specs, chosen = _resolve(problems, methods, **counts)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if shard is not None:
        return _run_shard(specs, chosen, config, shard, options, progress=progress, command=command)
    path = out_dir / "results.json"
    data, folded = _load_folder(out_dir, config)
    todo = []
    for key, (problem, m, reason) in _plan(specs, chosen).items():
        if key in data["cells"]:
            continue
        if reason:
            data["cells"][key] = _not_applicable_record(problem, m, reason)
        else:
            todo.append((problem, m))
    _save_json(path, data)
    _remove(folded)  # their cells are in results.json now

    def record(key, rec):
        data["cells"][key] = rec
        data.get("ran_by", {}).pop(key, None)
        _save_json(path, data)

    _run_cells(todo, record, progress=progress, desc="bench cells", **options)
    data = _with_command(data, command)
    _save_json(path, data)
    _write_report(data, out_dir)
    return data


def _run_shard(specs, chosen, config, shard, options, *, progress, command) -> dict:
    """Shard ``k`` of ``n`` of a job array: its share of every requested cell, into its own shard file."""
    index, count = shard
    out_dir = options["out_dir"]
    own_path = out_dir / shard_file("shard", index, count)
    done = set(_load_results(out_dir / "results.json", config)["cells"])  # read only: merge_shards writes it
    own = {"config": config, "cells": {}}
    for p in _shard_files(out_dir):
        found = _read_shard(p, config)
        done |= set(found["cells"])
        if p == own_path:  # this shard ran before: its file keeps what it holds
            own = copy.deepcopy(found)
    plan = _plan(specs, chosen)
    own = {**own, "shard": f"{index}/{count}", "plan": sorted(set(own.get("plan", [])) | set(plan))}
    own = _with_command(own, command)
    todo = []
    for key in assign_cells(plan, index, count):
        problem, m, reason = plan[key]
        if key in done:
            continue
        if reason:
            own["cells"][key] = _not_applicable_record(problem, m, reason)
        else:
            todo.append((problem, m))
    _save_json(own_path, own)
    where = f"shard {index}/{count} on {socket.gethostname()}"

    def record(key, rec):
        own["cells"][key] = rec
        own.setdefault("ran_by", {})[key] = where
        _save_json(own_path, own)

    _run_cells(todo, record, progress=progress, desc=f"bench cells (shard {index}/{count})", **options)
    return own


def _from_rank0(fn):
    """``fn()`` run on rank 0 only, its value shared with every rank; an error there stops every rank
    (rank 0 raises it, the others raise :class:`~invdiff.distributed.PeerError`)."""
    value, error = None, None
    if distributed.rank() == 0:
        try:
            value = fn()
        except Exception as err:  # noqa: BLE001 — shared with the other ranks, then raised here
            error = err
        shared = (value, None if error is None else f"{type(error).__name__}: {error}")
    else:
        shared = None
    value, message = distributed.all_gather_object(shared)[0]
    if error is not None:
        raise error
    if message is not None:
        raise distributed.PeerError(f"rank 0 stopped the run: {message}")
    return value


def _taken(todo: list[str], cells: dict, counter: str):
    """The cells of ``todo`` this rank takes, one each time the next is asked for, by the shared
    ``counter`` (:func:`invdiff.distributed.take_next`); stops when the counter passes the end."""
    i = distributed.take_next(counter)
    while i < len(todo):
        yield cells[todo[i]]
        i = distributed.take_next(counter)


def _run_ranks(problems, methods, counts, config, options, *, progress, command, shard) -> dict:
    """The cells spread over the ranks of the process group (see the module's description)."""
    rank, world = distributed.rank(), distributed.world_size()
    out_dir = options["out_dir"]
    path = out_dir / "results.json"
    state = {}

    def prepare():
        if shard is not None:
            raise ValueError("shard: a torchrun job spreads the cells over its ranks already; run the shards of "
                             "a job array as separate jobs")
        specs, chosen = _resolve(problems, methods, **counts)
        out_dir.mkdir(parents=True, exist_ok=True)
        data, folded = _load_folder(out_dir, config)
        todo = []
        plan = _plan(specs, chosen)
        for key, (problem, m, reason) in plan.items():
            if key in data["cells"]:
                continue
            if reason:
                data["cells"][key] = _not_applicable_record(problem, m, reason)
            else:
                todo.append(key)
        _save_json(path, data)
        _remove(folded)
        state["data"] = data
        return {"todo": todo, "plan": sorted(plan), "run": uuid.uuid4().hex}

    shared = _from_rank0(prepare)
    specs, chosen = _resolve(problems, methods, **counts)  # rank 0 has checked them
    cells = {key: (problem, m) for key, (problem, m, _) in _plan(specs, chosen, check=False).items()}
    todo = shared["todo"]
    if distributed.has_counters():  # whenever a process is free, the next cell no rank has taken
        mine = _taken(todo, cells, f"bench-cells-{shared['run']}")
    else:  # no store to count in: round-robin
        mine = [cells[k] for k in assign_cells(todo, rank, world)]
    own_path = out_dir / shard_file("rank", rank, world)
    own = {"config": config, "shard": f"rank {rank} of {world}", "plan": shared["plan"], "cells": {}, "ran_by": {}}
    where = f"rank {rank} of {world} on {socket.gethostname()}"

    def record(key, rec):
        if rank == 0:  # results.json after each cell, with what the other ranks have finished so far
            data = {**state["data"], "cells": {**state["data"]["cells"], key: rec},
                    "ran_by": {**state["data"].get("ran_by", {}), key: where}}
            others = [_read_shard(p, config) for p in _shard_files(out_dir)]
            state["data"] = _fold(data, others)
            _save_json(path, state["data"])
        else:
            own["cells"][key] = rec
            own["ran_by"][key] = where
            _save_json(own_path, own)

    _run_cells(mine, record, progress=progress and rank == 0,
               desc=f"bench cells (rank 0 of {world})", **options)
    gathered = distributed.all_gather_object(own)  # the records reach rank 0 without a shared file system too

    def finish():
        folded = _shard_files(out_dir)
        data = _fold(state["data"], gathered[1:] + [_read_shard(p, config) for p in folded])
        data = _with_command(data, command)
        _save_json(path, data)
        _remove(folded)
        _write_report(data, out_dir)
        return data

    return _from_rank0(finish)


def merge_shards(out) -> tuple[dict, list[str]]:
    """Fold the shard files of ``out`` into ``results.json``; write ``results.md`` and the figures.

    Shard files are ``results.shard-K-of-N.json`` (``invdiff bench --shard K/N``) and
    ``results.rank-K-of-N.json`` (the ranks of a ``torchrun`` job that did not finish). A cell
    already in ``results.json`` is kept; the merged shard files are removed once ``results.json``
    holds their cells.

    Parameters
    ----------
    out : str or Path
        The benchmark folder.

    Returns
    -------
    data : dict
        The merged results (as in ``results.json``).
    missing : list of str
        Keys of cells the shards were asked for that have no record yet (shards not run or not
        finished), sorted.

    Raises
    ------
    ValueError
        Nothing to merge, a file that is not a results file, or shards made with different
        settings (``n_images``, ``seed``, ``steps``: named in the message).
    """
    out_dir = Path(out)
    path = out_dir / "results.json"
    paths = _shard_files(out_dir)
    if not paths and not path.is_file():
        raise ValueError(f"nothing to merge in {out_dir}: no results.json and no shard files "
                         f"(results.shard-K-of-N.json, results.rank-K-of-N.json)")
    against = path if path.is_file() else paths[0]
    base = _read_json(against)
    if "config" not in base:
        raise ValueError(f"{against} is not a results file written by invdiff bench (no config)")
    base = {"config": base["config"], "cells": {}} if against != path else _without_stale(base, path)
    shards = [_read_shard(p, base["config"], against) for p in paths]
    data = _fold(base, shards)
    requested = set().union(*(s.get("plan", []) for s in shards))
    missing = sorted(requested - set(data["cells"]))
    _save_json(path, data)
    _remove(paths)
    _write_report(data, out_dir)
    return data, missing
