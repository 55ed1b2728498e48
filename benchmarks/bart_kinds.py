"""Where the BaRT speed ratio comes from, kind by kind: each group alone and each kind of the multi-kind groups
(noise, contrast, denoise) alone, batched against per image (scikit-image), on 300 MNIST test images and 300
uniformly random 32x32 RGB images, one CPU thread, best of 3 interleaved repeats.

    python benchmarks/bart_kinds.py [group ...]      # default: denoise noise contrast jpeg color_space fft

Prints one line per (data, group, kind): microseconds per image batched and per image, and their ratio, and
writes them to ``benchmarks/results/bart_kinds.json`` (a diagnostic beside ``bart_speed.py``, which measures
the bar). Each row's ``share_of_batched`` is its share of the group's batched time over the images drawn.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import write  # noqa: E402
from bart_reference import FUNCS, _row  # noqa: E402
from bart_speed import mnist_images  # noqa: E402

from bastion.defenses.bart import BaRT  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    which = sys.argv[1:] or ["denoise", "noise", "contrast", "jpeg", "color_space", "fft"]
    bart = BaRT(k=5)
    xm, _ = mnist_images(300)
    xr = torch.rand(300, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    rows = []
    for dname, x in (("mnist", xm), ("rgb32", xr)):
        xn = x.permute(0, 2, 3, 1).double().numpy()
        for t in bart.applicable(x.shape[1]):
            if t.name not in which:
                continue
            p = t.sample(x.shape[0], generator=torch.Generator().manual_seed(3))
            kinds = getattr(p, "kind", None)
            groups = [("all", list(range(x.shape[0])))]
            if kinds is not None:
                groups += [(str(v), [i for i in range(x.shape[0]) if kinds[i] == v]) for v in sorted(set(kinds.tolist()))]
            for gname, idx in groups:
                pp, xx = p.select(idx), x[idx]
                with torch.no_grad():
                    t.apply(xx[:4], pp.select(list(range(min(4, len(idx))))))  # warm-up
                batched, per_image = [], []
                for _ in range(3):
                    t0 = time.perf_counter()
                    with torch.no_grad():
                        t.apply(xx, pp)
                    batched.append(time.perf_counter() - t0)
                    rng = np.random.default_rng(0)
                    t0 = time.perf_counter()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        for j, i in enumerate(idx):
                            FUNCS[t.name](xn[i], _row(pp, j), rng)
                    per_image.append(time.perf_counter() - t0)
                b, q = min(batched), min(per_image)
                kind = gname if gname == "all" else t.kinds[int(gname)]  # default groups: every kind, in order
                print(f"{dname:6s} {t.name:12s} {kind:10s} n={len(idx):3d}  batched {1e6 * b / len(idx):7.1f} us/image"
                      f"  per image {1e6 * q / len(idx):7.1f}  ratio {q / b:5.1f}x")
                rows.append({"data": dname, "group": t.name, "kind": kind, "images": len(idx),
                             "batched_us_per_image": 1e6 * b / len(idx), "per_image_us_per_image": 1e6 * q / len(idx),
                             "speedup": q / b, "batched_seconds": b})
    for r in rows:  # each kind's share of its group's batched time (the "all" row is the whole group)
        whole = next(a for a in rows if a["data"] == r["data"] and a["group"] == r["group"] and a["kind"] == "all")
        r["share_of_batched"] = r["batched_seconds"] / whole["batched_seconds"] if r["kind"] != "all" else 1.0
    write("bart_kinds.json", {"benchmark": "bart_kinds", "images": 300, "torch_threads": 1, "groups": which,
                              "repeats": "best of 3, interleaved", "rows": rows})


if __name__ == "__main__":
    main()
