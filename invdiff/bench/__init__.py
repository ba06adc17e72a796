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
  absolute error of each underneath.

:mod:`invdiff.bench.tune` tunes every method's grid on the problems' validation split through
the same :meth:`Method.run <invdiff.methods.Method.run>`.
"""

from .report import cell_key, save_figure, summary, write_markdown
from .runner import not_applicable, run_bench, run_cell
from .tune import tune_problem

__all__ = ["run_bench", "run_cell", "not_applicable", "write_markdown", "summary", "save_figure", "cell_key",
           "tune_problem"]
