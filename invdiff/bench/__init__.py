"""Benchmark harness: named problems × methods, side by side with deepinv and classical baselines.

``invdiff bench --problems ct-sparse-8 mri-8x --solvers diffpir dps deepinv-dps tv --n-images 8 --out DIR``
runs every *cell* (one problem, one method of :data:`invdiff.methods.METHODS`) on the same
``n`` test images of the problem and writes, in ``DIR``:

* ``results.json`` — every cell's per-image PSNR/SSIM, NFE, VJP, seconds per image, peak memory,
  the hyperparameters used and the configuration; written after each cell, so an interrupted
  run resumes where it stopped (:mod:`invdiff.bench.runner`).
* ``results.md`` — one table per problem and a summary: best invdiff diffusion solver against
  the best classical baseline and against deepinv's samplers (:mod:`invdiff.bench.report`).
* ``figures/<problem>.png`` — truth and every method on the first test image, with the
  absolute error of each underneath, and the std map of the sampling methods (calibrated where
  the problem has a calibration) with its coverage.

Methods that draw several samples (``diffpir:4``) also get the coverage of their std map: the
fraction of counted pixels whose truth lies within ±2 std, and — where the problem has a
conformal calibration for the method (:mod:`invdiff.bench.uncertainty`) — the coverage of the
calibrated 95 % interval.

:mod:`invdiff.bench.tune` tunes every method's grid on the problems' validation split through
the same :meth:`Method.run <invdiff.methods.Method.run>`.

Under ``torchrun`` the cells are spread over the ranks, and ``invdiff bench --shard K/N`` runs
one share of them as a task of a job array; ``invdiff bench-merge`` (:func:`merge_shards`)
folds the shards' files into ``results.json`` (:mod:`invdiff.bench.runner`).
"""

from .report import cell_key, save_figure, summary, write_markdown
from .runner import assign_cells, merge_shards, not_applicable, parse_shard, run_bench, run_cell
from .tune import tune_problem
from .uncertainty import calibrate_problem, coverage_record, run_samples

__all__ = ["run_bench", "run_cell", "not_applicable", "merge_shards", "assign_cells", "parse_shard",
           "write_markdown", "summary", "save_figure", "cell_key", "tune_problem",
           "calibrate_problem", "coverage_record", "run_samples"]
