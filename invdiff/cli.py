"""The ``invdiff`` command line."""

from __future__ import annotations

import argparse
import shlex
import sys

__all__ = ["main"]


class CLIError(Exception):
    """An error reported to the user as one line, without a traceback."""


def _add_train(sub):
    p = sub.add_parser("train", help="train a small UNet diffusion prior (denoising score matching)",
                       description="Train an EDM-preconditioned UNet prior on phantoms, the photographs "
                                   "scikit-image ships, or a folder of images, and export safetensors.")
    p.add_argument("--data", default="phantoms",
                   help="training data: 'phantoms' (invdiff.data body phantoms, CT+MRI contrast), "
                        "'photos' (scikit-image photographs, training split), 'photos:NAME,NAME,...' "
                        "(chosen scikit-image photographs), 'folder:PATH' "
                        "(PNG/JPEG/TIFF/DICOM/npy files in PATH) or 'corpus:NAME' (the training split of a "
                        "real-image corpus of invdiff.data.corpora: ct, mri, photo)")
    p.add_argument("--size", type=int, default=64, help="training resolution in pixels (square); a multiple of 8, "
                   "since the UNet halves it 3 times")
    p.add_argument("--channels", type=int, default=1, choices=(1, 3), help="1 (grey) or 3 (RGB)")
    p.add_argument("--steps", type=int, default=10000, help="optimiser steps")
    p.add_argument("--batch", type=int, default=16, help="images per step (>= 1)")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="AdamW learning rate, finite and >= 0 (cosine-decayed to 10%%; 0 keeps the initial weights)")
    p.add_argument("--base", type=int, default=16, help="UNet base channel count: a multiple of 8 (its GroupNorm "
                   "layers use 8 groups)")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation and data")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads, >= 0 (0: the idle cores, i.e. the CPUs "
                   "this process may use minus the load average; see invdiff.threads)")
    p.add_argument("--device", default="cpu", help="torch device for the network, e.g. 'cuda' (data and "
                   "noise are drawn on the CPU from the seeded generator, so runs match across devices)")
    p.add_argument("--ckpt-minutes", type=float, default=5.0, help="minutes between checkpoints, >= 0 "
                   "(0: after every step)")
    p.add_argument("--max-minutes", type=float, default=0.0,
                   help="stop (after saving) when this many minutes have passed in this run; 0: no limit")
    p.add_argument("--init", default="", help="initialise the network from this invdiff .safetensors "
                   "checkpoint (fine-tuning; its path and sha256 are recorded in the output's metadata)")
    p.add_argument("--no-color-aug", action="store_true", help="no random channel permutation of RGB crops")
    p.add_argument("--stop-after", type=int, default=0,
                   help="stop (after saving) at this step, keeping the --steps learning-rate schedule; 0: run to --steps")
    p.add_argument("--patch-sizes", default="", help="comma-separated patch sizes, e.g. '32,48,64': train a "
                   "position-aware patch prior (PaDIS) on patches of --size frames, with 2 position channels; "
                   "it denoises images of any size >= the largest patch")
    p.add_argument("--intensity-aug", type=float, default=0.0, help="scale each training image by a random "
                   "factor in [1-a, 1+a] (clipped to [0, 1]); 0: off")
    p.add_argument("--dihedral", action="store_true", help="turn each training example by a random multiple "
                   "of 90° and flip it half the time (for data without a preferred orientation at the crop scale)")
    p.add_argument("--scales", default="1", help="--data corpus:NAME only: comma-separated pixel scales the "
                   "training images are resized to before cropping (1: their own scale), e.g. '0.5,0.75,1'")
    p.add_argument("--resume", action="store_true", help="resume from OUT.ckpt.pt if it exists (it must come "
                   "from a run with the same --base and --channels; a corrupt one is reported, not used)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--out", required=True, help="output .safetensors file (EMA weights + metadata)")
    p.set_defaults(func=_cmd_train)


def _threads(args) -> int:
    """Set torch's threads from ``--threads`` (0: the idle cores, :func:`invdiff.threads.auto_threads`)."""
    from .threads import set_threads

    return set_threads(args.threads)


def _add_device(p, what: str) -> None:
    """The ``--device`` option of a command that runs a network; ``what`` says what it moves there."""
    p.add_argument("--device", default="cpu", help=f"torch device for {what}, e.g. 'cuda' or 'cuda:1' (noise is "
                   "drawn on the CPU from the seeded generator, so runs match across devices up to rounding; "
                   "outputs are written from the CPU)")


def _number_list(text: str, option: str, kind=int) -> tuple:
    """Comma-separated ``kind`` values (``int`` or ``float``) of a list option, or a one-line error."""
    try:
        return tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        what = "integers" if kind is int else "numbers"
        raise CLIError(f"{option} must be comma-separated {what}, got {text!r}") from None


def _cmd_train(args, argv):
    from .train import TrainConfig, train

    if args.steps < 1:
        raise CLIError(f"--steps must be >= 1, got {args.steps}")
    # TrainConfig validates every option and names it; main reports the ValueError as one line
    cfg = TrainConfig(data=args.data, size=args.size, channels=args.channels, steps=args.steps,
                      batch=args.batch, lr=args.lr, base=args.base, seed=args.seed,
                      threads=args.threads, device=args.device, ckpt_minutes=args.ckpt_minutes, init=args.init,
                      color_aug=not args.no_color_aug, stop_after=args.stop_after,
                      max_minutes=args.max_minutes, out=args.out, patch_sizes=_number_list(args.patch_sizes, "--patch-sizes"),
                      intensity_aug=args.intensity_aug, dihedral=args.dihedral,
                      scales=_number_list(args.scales, "--scales", float),
                      command="invdiff " + " ".join(shlex.quote(a) for a in argv if a != "--resume"))
    path = train(cfg, resume=args.resume, progress=not args.no_progress)
    print(f"wrote {path}")


def _add_demo(sub):
    p = sub.add_parser("demo", help="sparse-view CT of a real CT slice with the shipped ct prior (about two minutes on 2 cores)",
                       description="Reconstruct a 128×128 window of a real abdominal CT slice that the prior never "
                                   "saw from 16-view CT (sigma_y = 0.005) with FBP and with DiffPIR on the shipped "
                                   "ct prior; print PSNR/SSIM and write a PNG of truth, FBP, reconstruction and "
                                   "posterior std.")
    p.add_argument("--out", default="invdiff-demo", help="output directory for demo_ct.png (created if missing)")
    p.add_argument("--views", type=int, default=16, help="number of CT projection angles")
    p.add_argument("--steps", type=int, default=50, help="diffusion steps (network calls per sample)")
    p.add_argument("--samples", type=int, default=4, help="posterior samples drawn in one batch (for the std map)")
    p.add_argument("--seed", type=int, default=0, help="seed of the measurement noise and the sampler")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads, >= 0 (0: the idle cores, i.e. the "
                   "CPUs this process may use minus the load average; see invdiff.threads)")
    _add_device(p, "the prior and the CT problem during DiffPIR")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args, argv):
    from .demo import run_demo

    for name in ("steps", "samples", "views"):
        if getattr(args, name) < 1:
            raise CLIError(f"--{name} must be >= 1, got {getattr(args, name)}")
    _threads(args)
    out = run_demo(args.out, views=args.views, steps=args.steps, samples=args.samples, seed=args.seed,
                   progress=not args.no_progress, device=args.device)
    print(f"{args.views}-view CT, 128×128 window of a real abdominal CT slice (held out), sigma_y = 0.005")
    print(f"  FBP      PSNR {out['fbp'][0]:6.2f} dB   SSIM {out['fbp'][1]:.3f}")
    print(f"  DiffPIR  PSNR {out['diffusion'][0]:6.2f} dB   SSIM {out['diffusion'][1]:.3f}   "
          f"({args.steps} steps × {args.samples} samples, {out['seconds']:.0f} s)")
    print(f"wrote {out['figure']}")


def _add_solve(sub):
    p = sub.add_parser("solve", help="reconstruct one image: a named problem, your image, or your own measurement",
                       description="Reconstruct from a named problem (its test image, or --image/--dicom measured "
                                   "with its operator) or from your own measurement (--measurement FILE.npy with "
                                   "--operator and its options) or MRI k-space (--kspace FILE.npy --mask FILE.npy "
                                   "[--coils FILE.npy]). Writes reconstruction.npy and reconstruction.png.")
    p.add_argument("--problem", help="named problem (see `invdiff problems`)")
    p.add_argument("--solver", default="diffpir", help="solver name (see `invdiff solvers`); default diffpir")
    p.add_argument("--steps", type=int, default=100, help="diffusion steps")
    p.add_argument("--samples", type=int, default=1,
                   help="posterior samples (> 1 adds a std map and 95 %% interval bounds, calibrated where the "
                        "problem has a calibration for this solver and number of samples)")
    p.add_argument("--seed", type=int, default=0, help="seed of the measurement noise and the sampler")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads, >= 0 (0: the idle cores, i.e. the "
                   "CPUs this process may use minus the load average; see invdiff.threads)")
    p.add_argument("--index", type=int, default=0, help="which test image of the problem")
    p.add_argument("--image", help="your image (PNG/JPEG/TIFF/npy) instead of the problem's test image")
    p.add_argument("--dicom", help="your DICOM slice instead of the problem's test image")
    p.add_argument("--nifti", metavar="FILE", help="your NIfTI volume or slice (.nii/.nii.gz) instead of the problem's "
                   "test image: every slice (along the file's third voxel axis) resized to the problem's size and "
                   "measured; also writes reconstruction.nii.gz with the input's header and (resize-adjusted) affine")
    p.add_argument("--dicom-series", metavar="DIR", help="your DICOM series (a folder of one series' slices) instead "
                   "of the problem's test image, as --nifti; also writes the new series reconstruction_dicom/")
    p.add_argument("--measurement", help="your measurement as .npy, shaped as the operator produces it (CT: (1, detectors, n_views)), optionally with a leading batch axis")
    p.add_argument("--operator", help="operator of --measurement (see invdiff.operators.OPERATORS), e.g. ct_sparse_view")
    p.add_argument("--size", type=int, default=None, help="image size of --measurement's operator (default 64)")
    p.add_argument("--n-views", type=int, help="CT views of --measurement's operator")
    p.add_argument("--max-angle", type=float, help="angular range in degrees (ct_limited_angle)")
    p.add_argument("--sigma-y", type=float, help="noise std of --measurement, in [0, 1] units (with --kspace: of "
                   "the normalised k-space; estimated from the outermost sampled k-space when omitted)")
    p.add_argument("--kspace", metavar="FILE", help="your complex Cartesian MRI k-space as .npy, (coils, H, W) or "
                   "(H, W), centred (DC at H//2, W//2; orthonormal FFT); needs --mask; the image size is its (H, W)")
    p.add_argument("--mask", metavar="FILE", help="0/1 sampling mask of --kspace as .npy, (H, W) or (W,) (sampled "
                   "columns)")
    p.add_argument("--coils", metavar="FILE", help="complex coil sensitivities of --kspace as .npy, (coils, H, W); "
                   "default: estimated from the fully sampled k-space centre (sum of squares)")
    p.add_argument("--prior", help="shipped prior name (default: the problem's, or phantom64)")
    _add_device(p, "the prior and the problem (operator and measurement)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_solve)


def _cmd_solve(args, argv):
    from . import distributed
    from .solve_cli import run_solve

    _threads(args)
    with distributed.process_group():  # under torchrun: every rank solves, the network calls are split
        out = run_solve(out_dir=args.out, solver=args.solver, steps=args.steps, samples=args.samples,
                        seed=args.seed, problem=args.problem, index=args.index, image=args.image, dicom=args.dicom,
                        measurement=args.measurement, operator=args.operator, size=args.size,
                        n_views=args.n_views, max_angle=args.max_angle, sigma_y=args.sigma_y, prior=args.prior,
                        progress=not args.no_progress and distributed.rank() == 0, nifti=args.nifti,
                        dicom_series=args.dicom_series, kspace=args.kspace, mask=args.mask, coils=args.coils,
                        distribute=True, device=args.device)
    if not out:  # a rank other than 0: rank 0 writes and reports
        return
    if "psnr" in out:
        print(f"PSNR {out['psnr']:.2f} dB (A†y {out['psnr_pinv']:.2f} dB), SSIM {out['ssim']:.3f}")
    print(f"{out['nfe']} network calls, {out['seconds']:.1f} s")
    print(f"wrote {out['npy']} and {out['png']}")
    for key in ("nifti", "dicom_series"):
        if key in out:
            print(f"wrote {out[key]}")
    if "interval95" in out:
        how = (f"calibrated on the problem's validation split (the raw map ×{out['calibration_scale']:.2f})"
               if out["calibrated"] else
               "NOT calibrated: Gaussian rule (no calibration stored for this problem, solver and --samples)")
        print(f"wrote {out['std']} and {out['interval95']}: 95 % interval {how}")
        if "std_calibrated" in out:
            print(f"wrote {out['std_calibrated']}")
        if "coverage95" in out:
            print(f"the 95 % interval holds the truth at {100 * out['coverage95']:.1f} % of the pixels")


def _add_bench(sub):
    from .methods import METHODS, default_methods

    p = sub.add_parser(
        "bench", help="benchmark solvers, deepinv's samplers and classical baselines on named problems",
        description="Run every (problem, method) cell on the same test images and write results.json, "
                    "results.md (PSNR/SSIM mean ± std, NFE, VJP, s/image, peak memory) and figures/<problem>.png "
                    "into --out. Finished cells in an existing results.json are skipped, so an interrupted run "
                    "resumes. Methods: " + ", ".join(f"{m.name} ({m.family})" for m in METHODS.values()) + ".")
    p.add_argument("--problems", nargs="+", default=None,
                   help="named problems (see `invdiff problems`); default: every 2D problem")
    p.add_argument("--solvers", nargs="+", default=None, metavar="METHOD",
                   help="methods to compare (see `invdiff methods`; SOLVER:K = mean of K posterior samples); "
                        "default: " + " ".join(default_methods()))
    p.add_argument("--n-images", type=int, default=8, help="test images per problem (one batch); default 8")
    p.add_argument("--seed", type=int, default=0, help="seed of the measurement noise and of every sampler")
    p.add_argument("--steps", type=int, default=100, help="diffusion steps of every diffusion method; default 100")
    p.add_argument("--jobs", type=int, default=1, help="cells run in parallel, each in its own process")
    p.add_argument("--threads", type=int, default=1, help="torch threads per cell")
    _add_device(p, "every cell's prior and problem (each cell's record names the device)")
    p.add_argument("--out", required=True, help="output directory (created; an existing results.json is resumed)")
    p.add_argument("--shard", metavar="K/N", default=None,
                   help="run only shard K of N (0 <= K < N) of the cells, as one task of a job array: writes "
                        "OUT/results.shard-K-of-N.json only; when every shard has finished, `invdiff bench-merge "
                        "--out OUT` makes results.json, results.md and the figures. (Under torchrun the cells "
                        "are spread over the ranks without this option.)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_bench)
    p = sub.add_parser(
        "bench-merge", help="merge the shard files of `invdiff bench --shard K/N` into results.json",
        description="Fold every shard file in --out (results.shard-K-of-N.json from `invdiff bench --shard K/N`, "
                    "results.rank-K-of-N.json left by a torchrun job that did not finish) into results.json, "
                    "remove them, and write results.md and figures/<problem>.png. Shards made with different "
                    "settings (--n-images, --seed, --steps) are refused.")
    p.add_argument("--out", required=True, help="the benchmark folder the shards wrote into")
    p.set_defaults(func=_cmd_bench_merge)


def _cmd_bench(args, argv):
    from . import distributed
    from .bench import parse_shard, run_bench
    from .problems import PROBLEMS

    shard = None if args.shard is None else parse_shard(args.shard)
    problems = args.problems or [n for n, p in PROBLEMS.items() if not p.is_volume]
    try:
        with distributed.process_group():  # forms the group under torchrun; nothing for a plain process
            data = run_bench(problems, args.solvers, n_images=args.n_images, seed=args.seed, steps=args.steps,
                             out=args.out, jobs=args.jobs, threads=args.threads, progress=not args.no_progress,
                             command="invdiff " + " ".join(argv), shard=shard, device=args.device)
            if distributed.rank() != 0:  # rank 0 reports for the job
                return
    except distributed.PeerError:
        # rank 0 stopped the run, reports why and exits with the error's code; this rank ends quietly
        # with 0, so that torchrun names rank 0 as the root cause of the failed job
        return
    except distributed.DistributedError as err:
        raise CLIError(str(err)) from None
    done = sum("psnr" in c for c in data["cells"].values())
    if shard is not None:
        k, n = shard
        print(f"shard {k}/{n}: {done} cells in {args.out}/results.shard-{k}-of-{n}.json; "
              f"when every shard has finished: invdiff bench-merge --out {args.out}")
        return
    print(f"{done} cells in {args.out}/results.json; tables in {args.out}/results.md, figures in {args.out}/figures/")


def _cmd_bench_merge(args, argv):
    from .bench import merge_shards

    data, missing = merge_shards(args.out)
    done = sum("psnr" in c for c in data["cells"].values())
    print(f"{done} cells in {args.out}/results.json; tables in {args.out}/results.md, figures in {args.out}/figures/")
    if missing:
        print(f"{len(missing)} requested cell(s) not finished yet (run their shards, then merge again): "
              + ", ".join(missing))


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{a.ljust(width)}  {b}" for a, b in rows)


def _add_lists(sub):
    p = sub.add_parser("problems", help="list the named benchmark problems",
                       description="List the named problems (operator, sigma_y, data, prior).")
    p.set_defaults(func=_cmd_problems)
    p = sub.add_parser("priors", help="list the shipped priors", description="List the shipped priors.")
    p.set_defaults(func=_cmd_priors)
    p = sub.add_parser("solvers", help="list the solvers", description="List the solvers usable with `solve`.")
    p.set_defaults(func=_cmd_solvers)
    p = sub.add_parser("methods", help="list the methods of `invdiff bench`",
                       description="List every method the benchmark and the tuner know: invdiff solvers, "
                                   "deepinv's samplers on the same prior, classical baselines.")
    p.set_defaults(func=_cmd_methods)


def _cmd_problems(args, argv):
    from .problems import PROBLEMS

    print(_table([(name, f"{p.description}; sigma_y = {p.sigma_y:g}; {p.data}, "
                         f"{f'{p.depth}×' if p.depth else ''}{p.size}×{p.size}; prior {p.prior}")
                  for name, p in PROBLEMS.items()]))


def _cmd_priors(args, argv):
    from .priors.zoo import catalog

    rows = []
    for name, e in catalog().items():
        h, w = e["resolution"]
        data = str(e.get("training_data", "")).split(",")[0].split(" (")[0]
        rows.append((name, f"{h}×{w}, {e['channels']} channel(s), {e['parameters'] / 1e6:.2f} M parameters, "
                           f"sigma {e['sigma_min']:g}–{e['sigma_max']:g}; trained on {data}; card {e.get('card', '-')}"))
    print(_table(rows))


def _cmd_solvers(args, argv):
    from .solvers import SOLVERS

    print(_table([(name, cls.summary()) for name, cls in SOLVERS.items()]))


def _cmd_methods(args, argv):
    from .methods import METHODS

    rows = []
    for name, m in METHODS.items():
        grid = ", ".join(f"{k} ∈ {{{', '.join(f'{v:g}' for v in vs)}}}" for k, vs in m.grid.items())
        rows.append((name, f"[{m.family}] {m.description.rstrip('.')}" + (f"; tuned: {grid}" if grid else "")
                     + ("" if m.default else " (not run by default)")))
    print(_table(rows))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="invdiff", description="Imaging inverse problems with diffusion priors.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    _add_solve(sub)
    _add_train(sub)
    _add_lists(sub)
    _add_bench(sub)
    return parser


#: exit codes: which class of failure ended a command (argparse's own usage errors are 2 too)
EXIT_CODES = {"bad input": 2, "file": 3, "numerical": 4, "interrupted": 130, "internal": 1}


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 600 else text[:597] + "..."


def main(argv=None) -> int:
    """Run the command line; every error ends as one line on stderr and an exit code of :data:`EXIT_CODES`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    # commands set torch's thread count (--threads); a caller in the same process gets its own back
    torch = sys.modules.get("torch")
    threads_before = torch.get_num_threads() if torch is not None else None
    try:
        args.func(args, argv)
    except (CLIError, ValueError, TypeError) as err:
        kind, msg = "bad input", _one_line(err)
    except BrokenPipeError:  # the reader of our output went away (e.g. `invdiff problems | head`)
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as err:  # missing, unreadable or unwritable paths
        kind, msg = "file", _one_line(err)
    except FloatingPointError as err:  # a solve that diverged (NonFiniteError)
        kind, msg = "numerical", _one_line(err)
    except KeyboardInterrupt:
        kind, msg = "interrupted", "interrupted"
    except Exception as err:  # noqa: BLE001 — anything else is a bug of ours: still one line
        kind, msg = "internal", f"internal error ({type(err).__name__}: {_one_line(err)}); please report it"
    else:
        return 0
    finally:
        if threads_before is not None:
            torch.set_num_threads(threads_before)
    print(f"invdiff {args.command}: error: {msg}", file=sys.stderr)
    return EXIT_CODES[kind]


if __name__ == "__main__":
    sys.exit(main())
