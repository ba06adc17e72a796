"""Many processes: invdiff.distributed, and invdiff bench over torchrun ranks and job-array shards.

One tiny benchmark (CT with 8 views, one image; pinv and TV run, DDRM is not applicable) is run
once in one process; a 2-rank gloo job launched by torchrun, two job-array shards merged by
``invdiff bench-merge``, and a folder resumed after a killed rank must give exactly its cells
(the same keys and bit-identical PSNR, SSIM, NFE, VJP and hyperparameters; only the timings may
differ). Torchrun runs in a subprocess importing this checkout.
"""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist

from invdiff import distributed
from invdiff.bench import assign_cells, parse_shard, run_bench
from invdiff.cli import main

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="this torch build has no torch.distributed with the gloo backend")

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--problems", "ct-sparse-8", "--solvers", "pinv", "tv", "ddrm", "--n-images", "1", "--steps", "2",
        "--no-progress"]
TIMINGS = ("seconds_per_image", "peak_memory_mb")  # measured, so they differ run to run


def _numbers(cells: dict) -> dict:
    """The cells without their timings."""
    return {k: {f: v for f, v in c.items() if f not in TIMINGS} for k, c in cells.items()}


def _same_cells(a: dict, b: dict) -> bool:
    """Same keys and exactly the same numbers (floats compared bit for bit) apart from timings."""
    return _numbers(a) == _numbers(b)


def _shard_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("results.*-of-*.json"))



@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: the tiny benchmark in one process."""
    out = tmp_path_factory.mktemp("one") / "b"
    assert main(["bench", *ARGS, "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert sorted(data["cells"]) == ["ct-sparse-8|ddrm", "ct-sparse-8|pinv", "ct-sparse-8|tv"]
    assert data["cells"]["ct-sparse-8|ddrm"]["not_applicable"] == "needs an SVD"
    return data


@pytest.fixture
def no_launch(monkeypatch):
    """A plain process: none of torchrun's variables set."""
    for name in distributed.LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_the_comparison_catches_a_wrong_merge(one_process):
    cells = one_process["cells"]
    assert _same_cells(cells, copy.deepcopy(cells))
    off = copy.deepcopy(cells)  # one PSNR one float step away
    off["ct-sparse-8|tv"]["psnr"][0] = float(np.nextafter(off["ct-sparse-8|tv"]["psnr"][0], 0))
    swapped = copy.deepcopy(cells)  # two records under each other's key
    swapped["ct-sparse-8|tv"], swapped["ct-sparse-8|pinv"] = cells["ct-sparse-8|pinv"], cells["ct-sparse-8|tv"]
    lost = {k: v for k, v in cells.items() if k != "ct-sparse-8|tv"}
    for bad in (off, swapped, lost):
        assert not _same_cells(bad, cells)
    timed = copy.deepcopy(cells)
    timed["ct-sparse-8|tv"]["seconds_per_image"] += 1.0
    assert _same_cells(timed, cells)


def test_assignment_deals_every_cell_to_exactly_one_shard():
    keys = [f"p{i % 3}|m{i}" for i in range(11)]
    for count in (1, 2, 3, 4, 11, 12):
        shards = [assign_cells(keys, k, count) for k in range(count)]
        assert sorted(sum(shards, [])) == sorted(keys)  # all of them, none twice
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
        assert shards == [assign_cells(reversed(keys), k, count) for k in range(count)]  # order-free
    assert assign_cells(["b", "c", "a", "d"], 1, 2) == ["b", "d"]


def test_torchrun_two_ranks_equal_one_process(one_process, tmp_path):
    out = tmp_path / "b"
    env = {k: v for k, v in os.environ.items() if k not in distributed.LAUNCH_VARIABLES}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p]),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "invdiff", "bench", *ARGS, "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads((out / "results.json").read_text())
    assert _same_cells(data["cells"], one_process["cells"])
    # the ranks took the cells left to do from the shared counter: each exactly once (the n/a one is not run)
    todo = sorted(k for k, c in one_process["cells"].items() if "psnr" in c)
    assert sorted(data["ran_by"]) == todo
    assert all(who.startswith(("rank 0 of 2 ", "rank 1 of 2 ")) for who in data["ran_by"].values()), data["ran_by"]
    # rank 0 alone reported and wrote; the ranks' shard files are merged and gone
    assert proc.stdout.count("cells in") == 1, proc.stdout
    assert _shard_files(out) == []
    md = (out / "results.md").read_text()
    assert "| pinv |" in md and "| tv |" in md and "n/a (needs an SVD)" in md
    assert (out / "figures" / "ct-sparse-8.png").stat().st_size > 1000


def test_job_array_shards_then_merge_equal_one_process(one_process, tmp_path, capsys):
    out = tmp_path / "b"
    for k in (0, 1):
        assert main(["bench", *ARGS, "--out", str(out), "--shard", f"{k}/2"]) == 0
    assert not (out / "results.json").exists()  # only the merge writes it
    assert _shard_files(out) == ["results.shard-0-of-2.json", "results.shard-1-of-2.json"]
    everything = sorted(one_process["cells"])
    for k in (0, 1):
        shard = json.loads((out / f"results.shard-{k}-of-2.json").read_text())
        assert sorted(shard["cells"]) == assign_cells(everything, k, 2), k
        assert shard["plan"] == everything
    # a shard run again finds its cells done and leaves its file as it was
    stamp = (out / "results.shard-1-of-2.json").read_text()
    assert main(["bench", *ARGS, "--out", str(out), "--shard", "1/2"]) == 0
    assert (out / "results.shard-1-of-2.json").read_text() == stamp
    capsys.readouterr()
    assert main(["bench-merge", "--out", str(out)]) == 0
    assert "2 cells in" in capsys.readouterr().out
    data = json.loads((out / "results.json").read_text())
    assert _same_cells(data["cells"], one_process["cells"])
    assert _shard_files(out) == []
    assert [c.split("--shard ")[-1] for c in data["commands"]] == ["0/2", "1/2"]
    assert "| tv |" in (out / "results.md").read_text()
    assert (out / "figures" / "ct-sparse-8.png").stat().st_size > 1000


def test_merge_of_part_of_the_shards_lists_what_is_missing(one_process, tmp_path, capsys):
    """A merge before every shard has finished keeps what is there and names the cells still to come."""
    out = tmp_path / "b"
    out.mkdir()
    cells = one_process["cells"]
    shard0 = {"config": one_process["config"], "cells": {"ct-sparse-8|ddrm": cells["ct-sparse-8|ddrm"]},
              "plan": sorted(cells)}
    (out / "results.shard-0-of-2.json").write_text(json.dumps(shard0))
    assert main(["bench-merge", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 requested cell(s) not finished yet" in printed and "ct-sparse-8|pinv, ct-sparse-8|tv" in printed
    assert json.loads((out / "results.json").read_text())["cells"] == shard0["cells"]


def test_resume_after_a_killed_job_loses_no_finished_cell(one_process, tmp_path):
    """A torchrun job killed after both ranks finished a cell: rank 0's in results.json, rank 1's only in
    its shard file. Resuming (here in one process) keeps both, runs neither again, and merges the shard."""
    out = tmp_path / "b"
    out.mkdir()
    cells = one_process["cells"]
    mark = {"seconds_per_image": 12345.0}  # an impossible timing: a cell run again would lose it
    by_rank0 = {k: ({**cells[k], **mark} if k.endswith("pinv") else cells[k]) for k in ("ct-sparse-8|ddrm",
                                                                                        "ct-sparse-8|pinv")}
    by_rank1 = {"ct-sparse-8|tv": {**cells["ct-sparse-8|tv"], **mark}}
    (out / "results.json").write_text(json.dumps({"config": one_process["config"], "cells": by_rank0}))
    (out / "results.rank-1-of-2.json").write_text(json.dumps(
        {"config": one_process["config"], "cells": by_rank1, "ran_by": {"ct-sparse-8|tv": "rank 1 of 2 on x"}}))
    assert main(["bench", *ARGS, "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["cells"] == {**by_rank0, **by_rank1}  # kept as finished, timing marks and all
    assert _same_cells(data["cells"], cells)
    assert data["ran_by"] == {"ct-sparse-8|tv": "rank 1 of 2 on x"}
    assert _shard_files(out) == []


@pytest.mark.parametrize("spec, message", [
    ("2/2", "K must be in 0..1"),
    ("0/0", "N must be >= 1"),
    ("a/b", "must be K/N"),
    ("1", "must be K/N"),
    ("-1/2", "must be K/N"),
    ("1/2/3", "must be K/N"),
])
def test_bad_shard_specs_are_refused(spec, message, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["bench", *ARGS, "--out", str(out), f"--shard={spec}"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_bad_shards_through_the_python_api(tmp_path):
    assert parse_shard(" 3 / 4 ") == (3, 4)
    for bad in ((2, 2), (0, 0), (1,), (True, 2), (0.0, 2), "0/2"):
        with pytest.raises(ValueError, match="shard"):
            run_bench(["ct-sparse-8"], ["pinv"], n_images=1, out=str(tmp_path / "never"), shard=bad)
    assert not (tmp_path / "never").exists()


def test_merging_shards_of_different_settings_is_refused(tmp_path, capsys):
    """Shards that cost nothing (every cell not applicable), made with other --steps, then --seed."""
    cheap = ["--problems", "ct-sparse-8", "--solvers", "ddrm", "deepinv-ddrm", "--n-images", "1", "--no-progress"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["bench", *cheap, "--steps", "2", "--out", str(a), "--shard", "0/2"]) == 0
    assert main(["bench", *cheap, "--steps", "3", "--seed", "1", "--out", str(b), "--shard", "1/2"]) == 0
    # the same shard started in a folder of other settings is refused at once
    capsys.readouterr()
    assert main(["bench", *cheap, "--steps", "3", "--out", str(a), "--shard", "1/2"]) == 2
    assert "other settings" in capsys.readouterr().err
    # a shard file brought in from elsewhere is refused by the merge, which names the differences
    (a / "results.shard-1-of-2.json").write_bytes((b / "results.shard-1-of-2.json").read_bytes())
    before = {p.name: p.read_bytes() for p in a.iterdir()}
    assert main(["bench-merge", "--out", str(a)]) == 2
    err = capsys.readouterr().err
    assert "results.shard-1-of-2.json and results.shard-0-of-2.json" in err
    assert "steps 3 vs 2" in err and "seed 1 vs 0" in err and "n_images" not in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in a.iterdir()} == before  # nothing written, nothing removed
    assert main(["bench-merge", "--out", str(tmp_path / "empty")]) == 2
    assert "nothing to merge" in capsys.readouterr().err


def test_a_plain_process_counts_alone(no_launch):
    assert distributed.has_counters()
    name = f"test-{os.getpid()}-{id(no_launch)}"
    assert [distributed.take_next(name) for _ in range(3)] == [0, 1, 2]
    assert distributed.take_next(name + "-other") == 0


def test_a_plain_process_is_rank_0_of_1(no_launch):
    assert distributed.launch_info() is None and not distributed.is_initialized()
    assert distributed.rank() == 0 and distributed.world_size() == 1
    assert distributed.all_gather_object({"a": [1, 2]}) == [{"a": [1, 2]}]
    distributed.barrier()
    with distributed.process_group() as launch:
        assert launch is None and not distributed.is_initialized()
    with pytest.raises(distributed.DistributedError, match="not a torchrun launch"):
        distributed.init()


GOOD = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}


def test_the_launch_environment_is_read_and_checked():
    assert distributed.launch_info(GOOD) == distributed.Launch(1, 2, 1, "10.0.0.1", 29500)
    assert distributed.launch_info({k: v for k, v in GOOD.items() if k != "LOCAL_RANK"}).local_rank == 0
    env = dict(GOOD)
    distributed.launch_info(env)
    assert env == GOOD  # read, not changed
    for change, message in [({"RANK": "2"}, "rank 2: RANK=2 must be in 0..WORLD_SIZE-1"),
                            ({"RANK": "x"}, "rank x: RANK='x' is not an integer"),
                            ({"WORLD_SIZE": "0", "RANK": "0"}, "WORLD_SIZE=0 must be >= 1"),
                            ({"MASTER_PORT": "70000"}, "MASTER_PORT=70000 is not a port"),
                            ({"MASTER_ADDR": ""}, "rank 1: not a complete torchrun launch: MASTER_ADDR not set")]:
        with pytest.raises(distributed.DistributedError) as info:
            distributed.launch_info({**GOOD, **change})
        assert message in str(info.value), change
    with pytest.raises(distributed.DistributedError, match="WORLD_SIZE, MASTER_ADDR, MASTER_PORT not set"):
        distributed.launch_info({"RANK": "0"})


@pytest.mark.parametrize("rank, cause", [("0", "1/2 clients joined"), ("1", "timed out")])
def test_a_group_that_cannot_form_names_the_rank_and_the_cause(rank, cause, monkeypatch, free_port):
    """Rank 0 whose peer never comes; rank 1 whose rank 0 is not there: one line each, after the timeout."""
    for name, value in {**GOOD, "RANK": rank, "LOCAL_RANK": rank, "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(distributed.DistributedError) as info:
        distributed.init(connect_timeout=1.0)
    text = str(info.value)
    assert text.startswith(f"rank {rank} of 2: the gloo process group did not form with rank 0 at 127.0.0.1:")
    assert cause in text.lower() and "\n" not in text
    assert not distributed.is_initialized()


def test_the_command_line_reports_a_bad_launch_in_one_line(monkeypatch, tmp_path, capsys):
    for name, value in {**GOOD, "RANK": "3"}.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "never"
    assert main(["bench", *ARGS, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == "invdiff bench: error: rank 3: RANK=3 must be in 0..WORLD_SIZE-1 (WORLD_SIZE=2)\n"
    assert not out.exists()
