"""Time invdiff's CT and MRI operators against scikit-image and deepinv in one run.

Usage::

    .venv/bin/python benchmarks/operators.py --out benchmarks/operators.md

Everything runs on one CPU thread (scikit-image is single-threaded), batch 1, median of
``--repeats`` runs after one warm-up. Ratios are invdiff time / reference time, measured in
the same process. Adjoint errors are |<Ax, y> − <x, Aᵀy>| / |<Ax, y>| in float64
(:func:`invdiff.operators.check_adjoint`).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import numpy as np
import torch


def timeit(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def ct_rows(sizes, views, repeats):
    import deepinv
    from skimage.transform import iradon, radon

    from invdiff.data.phantoms import shepp_logan
    from invdiff.operators import check_adjoint, ct_sparse_view

    rows = []
    for n in sizes:
        for v in views:
            x = shepp_logan(n)[None]
            ours = ct_sparse_view(n, v)
            theta = ours.angles.double().numpy()
            dv = deepinv.physics.Tomography(angles=ours.angles, img_width=n, circle=False, normalize=False)
            dv_legacy = deepinv.physics.Tomography(angles=ours.angles, img_width=n, circle=False,
                                                   normalize=False, adjoint_via_backprop=False)
            y = ours.A(x)
            y_dv = dv.A(x)
            xn = x[0, 0].double().numpy()
            sino = radon(xn, theta, circle=False)
            with torch.no_grad():
                t_fwd = timeit(lambda: ours.A(x), repeats)
                t_fwd_dv = timeit(lambda: dv.A(x), repeats)
                t_adj = timeit(lambda: ours.A_adjoint(y), repeats)
                t_adj_dv = timeit(lambda: dv.A_adjoint(y_dv), repeats)
                t_adj_legacy = timeit(lambda: dv_legacy.A_adjoint(y_dv), repeats)
                t_fbp = timeit(lambda: ours.fbp(y), repeats)
            t_fwd_sk = timeit(lambda: radon(xn, theta, circle=False), repeats)
            t_bp_sk = timeit(lambda: iradon(sino, theta, circle=False, filter_name=None), repeats)
            t_fbp_sk = timeit(lambda: iradon(sino, theta, circle=False, filter_name="ramp"), repeats)
            g = torch.Generator().manual_seed(0)
            err = check_adjoint(ours.double(), (1, 1, n, n), generator=g)
            err_legacy = check_adjoint(_Scaled(dv_legacy), (1, 1, n, n), dtype=torch.float32,
                                       generator=torch.Generator().manual_seed(0))
            # sinogram agreement with scikit-image (same angles; ours is R x / W)
            diff = np.linalg.norm(y[0, 0].double().numpy() * n - _crop(sino, y.shape[-2])) / np.linalg.norm(sino)
            rows.append(dict(n=n, views=v, fwd=t_fwd, fwd_sk=t_fwd_sk, fwd_dv=t_fwd_dv, adj=t_adj,
                             adj_dv=t_adj_dv, adj_legacy=t_adj_legacy, bp_sk=t_bp_sk, fbp=t_fbp,
                             fbp_sk=t_fbp_sk, err=err, err_legacy=err_legacy, sino_diff=diff))
            print(f"CT {n}px {v} views done", file=sys.stderr)
    return rows


class _Scaled(torch.nn.Module):
    """Wrap a deepinv operator so check_adjoint can call it (float32 only: legacy adjoint)."""

    def __init__(self, op):
        super().__init__()
        self.op = op

    def A(self, x):
        return self.op.A(x.float()).to(x.dtype)

    def A_adjoint(self, y):
        return self.op.A_adjoint(y.float()).to(y.dtype)


def _crop(sino, n_det):
    """Centre-crop or pad scikit-image's sinogram (detector axis) to ``n_det`` bins."""
    d = sino.shape[0]
    if d == n_det:
        return sino
    if d > n_det:
        s = (d - n_det) // 2
        return sino[s:s + n_det]
    out = np.zeros((n_det, sino.shape[1]))
    s = (n_det - d) // 2
    out[s:s + d] = sino
    return out


def mri_rows(sizes, repeats):
    import deepinv

    from invdiff.operators import check_adjoint, mri_cartesian

    rows = []
    for n in sizes:
        for coils in (1, 8):
            g = torch.Generator().manual_seed(0)
            ours = mri_cartesian(n, 4, 0.08, coils=coils, generator=g)
            mask = ours.mask
            if coils == 1:
                dv = deepinv.physics.MRI(mask=mask, img_size=(2, n, n))
            else:
                dv = deepinv.physics.MultiCoilMRI(mask=mask, coil_maps=ours.coil_maps, img_size=(2, n, n))
            x = torch.rand(1, 1, n, n, generator=g)
            xc = torch.cat([x, torch.zeros_like(x)], 1)
            y = ours.A(x)
            with torch.no_grad():
                t_fwd = timeit(lambda: ours.A(x), repeats)
                t_fwd_dv = timeit(lambda: dv.A(xc), repeats)
                t_adj = timeit(lambda: ours.A_adjoint(y), repeats)
                t_adj_dv = timeit(lambda: dv.A_adjoint(y), repeats)
            err = check_adjoint(ours.double(), (1, 1, n, n), generator=torch.Generator().manual_seed(0))
            same = float((ours.A(x) - dv.A(xc)).norm() / dv.A(xc).norm())
            rows.append(dict(n=n, coils=coils, fwd=t_fwd, fwd_dv=t_fwd_dv, adj=t_adj, adj_dv=t_adj_dv,
                             err=err, same=same))
            print(f"MRI {n}px {coils} coils done", file=sys.stderr)
    return rows


def render(ct, mri, command):
    ms = lambda t: f"{1e3 * t:.1f}"  # noqa: E731
    lines = [
        "# Operator timings", "",
        f"Command: `{command}`", "",
        f"Machine: {platform.machine()}, {platform.system()}, torch {torch.__version__}, 1 CPU thread, batch 1, "
        "median of repeated runs after a warm-up. Ratios are invdiff / reference from the same run.", "",
        "## CT (parallel beam, Shepp–Logan)", "",
        "Forward: invdiff `A` = deepinv `Tomography.A` / W. Adjoint: invdiff by autograd in y's dtype; "
        "deepinv's default adjoint (also autograd, cached), its legacy adjoint (`adjoint_via_backprop=False`) "
        "and scikit-image's unfiltered `iradon` (a back-projection, not the exact adjoint). "
        "`sino Δ` = relative difference of W·A x from `skimage.transform.radon` (same angles, centre-cropped).", "",
        "| px | views | fwd ms | skimage radon ms | ratio | deepinv fwd ms | ratio | adj ms | deepinv adj ms | "
        "ratio | skimage backproj ms | ratio | FBP ms | skimage iradon ms | ratio | adjoint err (ours, f64) | "
        "adjoint err (deepinv legacy, f32) | sino Δ vs skimage |",
        "|" + "---|" * 18,
    ]
    for r in ct:
        lines.append(
            f"| {r['n']} | {r['views']} | {ms(r['fwd'])} | {ms(r['fwd_sk'])} | {r['fwd'] / r['fwd_sk']:.2f} | "
            f"{ms(r['fwd_dv'])} | {r['fwd'] / r['fwd_dv']:.2f} | {ms(r['adj'])} | {ms(r['adj_dv'])} | "
            f"{r['adj'] / r['adj_dv']:.2f} | {ms(r['bp_sk'])} | {r['adj'] / r['bp_sk']:.2f} | {ms(r['fbp'])} | "
            f"{ms(r['fbp_sk'])} | {r['fbp'] / r['fbp_sk']:.2f} | {r['err']:.1e} | {r['err_legacy']:.1e} | "
            f"{r['sino_diff']:.3f} |")
    lines += [
        "", "## MRI (Cartesian, 4×, real image in)", "",
        "invdiff wraps deepinv's `MRI` / `MultiCoilMRI`, adding the real-image embedding (zero imaginary part) "
        "and shape checks; `same` = relative difference of the two k-spaces.", "",
        "| px | coils | fwd ms | deepinv fwd ms | ratio | adj ms | deepinv adj ms | ratio | adjoint err (f64) | same |",
        "|" + "---|" * 10,
    ]
    for r in mri:
        lines.append(
            f"| {r['n']} | {r['coils']} | {ms(r['fwd'])} | {ms(r['fwd_dv'])} | {r['fwd'] / r['fwd_dv']:.2f} | "
            f"{ms(r['adj'])} | {ms(r['adj_dv'])} | {r['adj'] / r['adj_dv']:.2f} | {r['err']:.1e} | {r['same']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ct-sizes", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--ct-views", type=int, nargs="+", default=[60, 180])
    p.add_argument("--mri-sizes", type=int, nargs="+", default=[128, 256])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=None, help="write the markdown table here (also printed)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    command = "python benchmarks/operators.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = render(ct_rows(args.ct_sizes, args.ct_views, args.repeats), mri_rows(args.mri_sizes, args.repeats),
                  command.strip())
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
