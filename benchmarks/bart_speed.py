"""Speed of the batched BaRT barrage against the per-image scikit-image barrage (the paper's way).

For 1,000 MNIST test images, 1,000 uniformly random 32x32 RGB images and 1,000 32x32 crops of the colour
photographs bundled with scikit-image (natural image statistics, 8-bit values, like CIFAR's), a k=5 barrage
is drawn once; the batched torch barrage (``BaRT.apply``) and the same draw applied image by image with
scikit-image/SciPy/Pillow (``bart_reference.barrage_per_image``) are timed, interleaved, ``--repeats``
times; the medians and their ratio are reported; then each group alone (300 images) shows where the ratio
comes from. Both run on one CPU thread (``torch.set_num_threads(1)``: scikit-image is single-threaded). For
information, the batched barrage is also timed with torch's default thread count
(``batched_default_threads_median_s``): that is what a user gets, but the bar compares one thread with one.

    python benchmarks/bart_speed.py [--quick]

Writes benchmarks/results/bart_speed.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import numpy as np  # noqa: E402
from bart_reference import FUNCS, _row, barrage_per_image  # noqa: E402

from bastion.data import load_dataset  # noqa: E402
from bastion.defenses.bart import BaRT  # noqa: E402

RESULTS = Path(__file__).parent / "results"
_DEFAULT_THREADS = torch.get_num_threads()
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def mnist_images(n: int) -> tuple[torch.Tensor, str]:
    try:
        return load_dataset("mnist", "test", data_dir=SHARED).images[:n], "mnist:test"
    except Exception:  # full MNIST missing: the embedded held-out set has the same images' kind
        return load_dataset("mnist-5k", "test").images[:n], "mnist-5k:test"


def photo_crops(n: int, seed: int = 1) -> tuple[torch.Tensor, str]:
    """``n`` 32x32 RGB images: random square crops (48 to 160 pixels) of scikit-image's bundled colour
    photographs, area-downsampled and rounded to 8-bit values."""
    from skimage import data

    names = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina", "immunohistochemistry")
    photos = [torch.from_numpy(getattr(data, m)()[..., :3].copy()).permute(2, 0, 1).float() / 255 for m in names]
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        im = photos[int(torch.randint(len(photos), (1,), generator=g))]
        s = int(torch.randint(48, 161, (1,), generator=g))
        r = int(torch.randint(0, im.shape[1] - s + 1, (1,), generator=g))
        c = int(torch.randint(0, im.shape[2] - s + 1, (1,), generator=g))
        out.append(torch.nn.functional.interpolate(im[None, :, r : r + s, c : c + s], size=(32, 32), mode="area")[0])
    return (torch.stack(out) * 255).round() / 255, f"crops of scikit-image photos: {', '.join(names)}"


def time_pair(bart: BaRT, x: torch.Tensor, repeats: int, seed: int) -> dict:
    draw = bart.sample(x.shape[0], x.shape[1], generator=torch.Generator().manual_seed(seed))
    xn = x.permute(0, 2, 3, 1).double().numpy()
    batched, per_image = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.no_grad():
            bart.apply(x, draw)
        batched.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            barrage_per_image(xn, bart, draw, seed=seed)
        per_image.append(time.perf_counter() - t0)
    b, p = statistics.median(batched), statistics.median(per_image)
    threads = torch.get_num_threads()
    torch.set_num_threads(_DEFAULT_THREADS)
    multi = []
    try:
        for _ in range(repeats):
            t0 = time.perf_counter()
            with torch.no_grad():
                bart.apply(x, draw)
            multi.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    groups = {}
    for row in draw.order.tolist():
        for j in row:
            groups[draw.names[j]] = groups.get(draw.names[j], 0) + 1
    return {"images": int(x.shape[0]), "shape": list(x.shape[1:]), "k": bart.k,
            "batched_seconds": batched, "per_image_seconds": per_image,
            "batched_median_s": b, "per_image_median_s": p, "speedup": p / b, "group_counts": groups,
            "default_threads": _DEFAULT_THREADS, "batched_default_threads_median_s": statistics.median(multi),
            "speedup_default_threads": p / statistics.median(multi)}


def time_groups(bart: BaRT, x: torch.Tensor, seed: int) -> dict:
    """Each group alone (every image through it, one draw), batched vs per image: where the ratio comes from."""
    xn = x.permute(0, 2, 3, 1).double().numpy()
    g = torch.Generator().manual_seed(seed)
    out = {}
    for t in bart.applicable(x.shape[1]):
        p = t.sample(x.shape[0], generator=g)
        with torch.no_grad():
            t.apply(x[:8], p.select(list(range(8))))  # warm-up (first-call costs)
        t0 = time.perf_counter()
        with torch.no_grad():
            t.apply(x, p)
        tb = time.perf_counter() - t0
        rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i in range(x.shape[0]):
                FUNCS[t.name](xn[i], _row(p, i), rng)
        tp = time.perf_counter() - t0
        out[t.name] = {"batched_us_per_image": 1e6 * tb / x.shape[0], "per_image_us_per_image": 1e6 * tp / x.shape[0],
                       "speedup": tp / tb}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200 images, 1 repeat")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--k", type=int, default=5)
    args = ap.parse_args()
    n, repeats = (200, 1) if args.quick else (1000, args.repeats)
    torch.set_num_threads(1)
    bart = BaRT(k=args.k)
    xm, src = mnist_images(n)
    xr = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    xp, photo_src = photo_crops(n)
    bart.apply(xm[:16], bart.sample(16, 1, generator=torch.Generator().manual_seed(2)))  # warm-up
    res = {"mnist": {"data": src, **time_pair(bart, xm, repeats, seed=10)},
           "rgb32": {"data": "uniform random 32x32 RGB", **time_pair(bart, xr, repeats, seed=11)},
           "rgb32_photos": {"data": photo_src, **time_pair(bart, xp, repeats, seed=13)}}
    for name, xx in (("mnist", xm), ("rgb32", xr), ("rgb32_photos", xp)):
        res[name]["per_group"] = time_groups(bart, xx[: min(n, 300)], seed=12)
    out = {"benchmark": "bart_speed", "quick": args.quick, "torch_threads": 1, "torch": torch.__version__,
           "python": platform.python_version(), "bart": bart.to_dict(), "results": res}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bart_speed.json").write_text(json.dumps(out, indent=2))
    for name, r in res.items():
        print(f"{name}: {r['images']} images k={r['k']}  batched {r['batched_median_s']:.3f}s  "
              f"per-image scikit-image {r['per_image_median_s']:.3f}s  speedup {r['speedup']:.1f}x "
              f"({r['speedup_default_threads']:.1f}x with {r['default_threads']} torch threads)")
        print("   per group (us/image batched vs per-image, speedup): " + ", ".join(
            f"{g} {v['batched_us_per_image']:.0f}/{v['per_image_us_per_image']:.0f} {v['speedup']:.1f}x"
            for g, v in r["per_group"].items()))


if __name__ == "__main__":
    main()
