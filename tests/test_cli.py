"""The command line: demo, priors, solvers; one-line errors with exit code 2."""

import os

import pytest

from invdiff.cli import main


def test_demo_fast_mode(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--steps", "2", "--samples", "2", "--device", "cpu",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "FBP" in out and "DiffPIR" in out and "demo_ct.png" in out
    assert (tmp_path / "demo_ct.png").stat().st_size > 1000
    assert sorted(os.listdir(tmp_path)) == ["demo_ct.png"]  # no temporary files left


@pytest.mark.parametrize("args, message", [
    (["demo", "--steps", "0"], "--steps must be >= 1"),
    (["demo", "--samples", "-1"], "--samples must be >= 1"),
])
def test_demo_bad_arguments(args, message, capsys, tmp_path):
    assert main(args + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_demo_unwritable_output(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["demo", "--out", str(blocker / "sub"), "--steps", "1", "--no-progress"]) == 3  # a file error
    assert "error" in capsys.readouterr().err


def test_listings(capsys):
    assert main(["priors"]) == 0
    out = capsys.readouterr().out
    assert "phantom64" in out and "photo64" in out
    assert main(["solvers"]) == 0
    out = capsys.readouterr().out
    for name in ("dps", "smc", "daps", "mbir", "ddrm"):
        assert name in out


def test_solve_named_problem_and_own_image(tmp_path, capsys):
    import numpy as np
    from skimage import data, io

    assert main(["solve", "--problem", "ct-sparse-32", "--steps", "2", "--out", str(tmp_path / "a"),
                 "--no-progress"]) == 0
    assert "PSNR" in capsys.readouterr().out
    x = np.load(tmp_path / "a" / "reconstruction.npy")
    assert x.shape == (1, 1, 64, 64) and sorted(os.listdir(tmp_path / "a")) == ["reconstruction.npy",
                                                                                 "reconstruction.png"]
    img = tmp_path / "camera.png"
    io.imsave(img, data.camera())
    assert main(["solve", "--problem", "ct-sparse-32", "--image", str(img), "--steps", "2", "--samples", "2",
                 "--out", str(tmp_path / "b"), "--no-progress"]) == 0


def test_solve_own_measurement_and_its_errors(tmp_path, capsys):
    import numpy as np
    import torch

    from invdiff.operators import ct_sparse_view

    y = ct_sparse_view(64, 40).A(torch.full((1, 1, 64, 64), 0.3))[0].numpy()
    np.save(tmp_path / "sino.npy", y)
    args = ["solve", "--measurement", str(tmp_path / "sino.npy"), "--operator", "ct_sparse_view", "--sigma-y", "0.01",
            "--steps", "2", "--no-progress"]
    assert main(args + ["--n-views", "40", "--out", str(tmp_path / "ok")]) == 0
    assert np.load(tmp_path / "ok" / "reconstruction.npy").shape == (1, 1, 64, 64)
    capsys.readouterr()
    cases = [  # (argv, message, exit code: 2 bad input, 3 file error)
        (args + ["--n-views", "20", "--out", str(tmp_path / "bad1")], "has shape (1, 91, 40)", 2),
        (["solve", "--measurement", str(tmp_path / "nope.npy"), "--operator", "ct_sparse_view", "--sigma-y", "0.01",
          "--out", str(tmp_path / "bad2")], "no measurement file", 3),
        (["solve", "--problem", "ct-sparse-9", "--out", str(tmp_path / "bad3")], "known problems", 2),
        (["solve", "--problem", "ct-sparse-8", "--solver", "magic", "--out", str(tmp_path / "bad4")], "known solvers", 2),
        (["solve", "--problem", "ct-sparse-8", "--steps", "0", "--out", str(tmp_path / "bad5")], "--steps", 2),
        (["solve", "--problem", "ct-sparse-8", "--image", str(tmp_path / "none.png"), "--out", str(tmp_path / "bad6")],
         "none.png", 3),
        (args + ["--max-angle", "90", "--out", str(tmp_path / "bad7")], "does not take --max-angle", 2),
    ]
    for argv, message, code in cases:
        assert main(argv) == code, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
        assert not os.path.exists(argv[argv.index("--out") + 1])  # nothing written


def test_solve_device_cpu_is_the_default_run(tmp_path):
    """``--device cpu`` moves the prior and the problem to where they are already: the same numbers."""
    import numpy as np

    for sub, extra in (("plain", []), ("cpu", ["--device", "cpu"])):
        assert main(["solve", "--problem", "ct-sparse-32", "--steps", "2", "--samples", "2", "--out",
                     str(tmp_path / sub), "--no-progress"] + extra) == 0
    assert np.array_equal(np.load(tmp_path / "plain" / "reconstruction.npy"),
                          np.load(tmp_path / "cpu" / "reconstruction.npy"))
    assert np.array_equal(np.load(tmp_path / "plain" / "std.npy"), np.load(tmp_path / "cpu" / "std.npy"))


_DEVICE_COMMANDS = {  # every command that runs a network, with cheap arguments
    "solve": ["solve", "--problem", "ct-sparse-8", "--steps", "1", "--no-progress"],
    "demo": ["demo", "--steps", "1", "--samples", "1", "--no-progress"],
    "bench": ["bench", "--problems", "ct-sparse-8", "--solvers", "diffpir", "--n-images", "1", "--steps", "1",
              "--no-progress"],
}


@pytest.mark.parametrize("command", sorted(_DEVICE_COMMANDS))
@pytest.mark.parametrize("device, message", [
    ("nonsense", "--device 'nonsense' is not a torch device name"),
    ("meta", "--device 'meta' holds shapes but no values"),
    pytest.param("cuda", "--device 'cuda': CUDA is not available on this machine",
                 marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="CUDA is available here")),
])
def test_unusable_device_is_one_line_before_any_work(command, device, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_DEVICE_COMMANDS[command] + ["--device", device, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"invdiff {command}: error: {message}") and "available here: cpu" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # checked before anything is written


def test_solve_volume_problem_with_mbir(tmp_path, capsys):
    import numpy as np

    assert main(["solve", "--problem", "ct3d-sparse-8", "--solver", "mbir", "--steps", "2", "--out", str(tmp_path),
                 "--no-progress"]) == 0
    assert np.load(tmp_path / "reconstruction.npy").shape == (32, 1, 64, 64)
    assert main(["solve", "--problem", "ct3d-sparse-8", "--index", "1", "--out", str(tmp_path / "x")]) == 2
    assert "--index" in capsys.readouterr().err


def test_threads_rule_and_option(monkeypatch):
    """0 threads means the idle cores: CPUs this process may use minus the load average, at least 1;
    a command's --threads does not leak into the caller's process."""
    import torch

    from invdiff import threads

    assert threads.auto_threads(load=0.0, cpus=2) == 2
    assert threads.auto_threads(load=1.2, cpus=2) == 1
    assert threads.auto_threads(load=7.0, cpus=2) == 1  # busier than the machine: still one thread
    assert threads.auto_threads(load=0.4, cpus=8) == 8 and threads.auto_threads(load=2.6, cpus=8) == 5
    monkeypatch.setattr(threads, "_busy_cores", lambda: 1.0)  # one core busy right now
    assert threads.auto_threads(cpus=2) == 1
    monkeypatch.setattr(threads, "_busy_cores", lambda: None)  # no /proc/stat: the load average
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    assert threads.auto_threads(cpus=2) == 2
    with pytest.raises(ValueError, match="--threads must be an integer >= 0"):
        threads.set_threads(-1)
    before = torch.get_num_threads()
    seen = []
    monkeypatch.setattr("invdiff.solve_cli.run_solve", lambda **kw: seen.append(torch.get_num_threads()) or {})
    main(["solve", "--problem", "ct-sparse-8", "--threads", "1", "--out", "unused"])
    assert seen == [1] and torch.get_num_threads() == before
    assert main(["solve", "--problem", "ct-sparse-8", "--threads", "-2", "--out", "unused"]) == 2


def test_busy_cores_reads_proc_stat(monkeypatch):
    """Two reads of the per-CPU lines: only this process's CPUs count, guest time is not counted twice.
    CPU 0: 1 of 4 jiffies idle -> 0.75 busy; CPU 1: all idle; CPU 2 (not ours): fully busy."""
    import io

    from invdiff import threads

    first = "cpu  0 0 0 0 0 0 0 0 0 0\ncpu0 100 0 0 300 0 0 0 0 0 0\ncpu1 0 0 0 400 0 0 0 0 0 0\ncpu2 0 0 0 0 0 0 0 0 0 0\n"
    second = ("cpu  0 0 0 0 0 0 0 0 0 0\ncpu0 130 0 0 310 0 0 0 0 50 0\ncpu1 0 0 0 440 0 0 0 0 0 0\n"
              "cpu2 40 0 0 0 0 0 0 0 0 0\n")
    reads = iter([first, second])
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: io.StringIO(next(reads)))
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1})
    assert abs(threads._busy_cores(window=0.0) - 0.75) < 1e-12


def test_omp_num_threads_stands_for_the_automatic_rule(monkeypatch):
    """torchrun sets OMP_NUM_THREADS=1 per rank: --threads 0 must not give every rank all the idle cores."""
    import torch

    from invdiff import threads

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        monkeypatch.setattr(threads, "auto_threads", lambda: 2)
        assert threads.set_threads(0) == 1 and torch.get_num_threads() == 1
        assert threads.set_threads(2) == 2  # an explicit count still wins
        monkeypatch.delenv("OMP_NUM_THREADS")
        torch.set_num_threads(1)
        assert threads.set_threads(0) == 2
    finally:
        torch.set_num_threads(before)
