"""Do the committed numbers still come out of the current code? Reruns the deterministic parts of earlier
benchmarks and compares every number with the committed JSON.

    python benchmarks/reproduce.py

Reruns, on the same images with the same seeds:
* benchmarks/results/attacks.json, ``strength``: clean accuracy and robust accuracy, success rate and mean L0/L2/Linf
  of FGSM at eps 0.1/0.2/0.3, BIM-10 and PGD-40 (step 0.01) at 0.3 on mnist-cnn, 1,000 held-out images;
* attacks.json, ``logreg_fgsm``: the softmax regression's FGSM error table on the MNIST test set (or mnist-5k when
  the MNIST files are not in ../shared/data);
* apgd_vs_pgd.json: APGD-CE and PGD-100 robust accuracy at eps 0.3 on every deterministic shipped model (BaRT is
  left out: it takes most of that benchmark's time).

Timings are not compared (they are not deterministic). Writes benchmarks/results/reproduce.json: every number,
committed and rerun, and whether each matches (to 1e-6, the float32 noise of a sum in another order).
"""

from __future__ import annotations

import json
from typing import Any

import torch
from _common import RESULTS, SHARED, heldout, write

from attacks import logreg_errors, strength
from bastion._model import declared_randomized
from bastion.attacks import APGD, PGD
from bastion.data import load_dataset
from bastion.eval import Evaluation
from bastion.models import PRETRAINED, pretrained, weights_path

TOL = 1e-6


def apgd_vs_pgd(committed: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, row in committed["models"].items():
        if name not in PRETRAINED or not weights_path(name).exists():
            continue
        model = pretrained(name)
        if declared_randomized(model):
            continue
        data = heldout(row["n"])
        out[name] = {}
        for label, atk in (("apgd_ce", APGD(eps=0.3, steps=100)), ("pgd100", PGD(eps=0.3, steps=100))):
            rep = Evaluation(suite=[atk], eps_grid=[0.3], checks=False, batch_size=250, seed=0).run(model, data)
            out[name][label] = {"robust_accuracy": next(r.accuracy for r in rep.rows if r.mode == "naive")}
    return out


def compare(committed: Any, rerun: Any, path: str, rows: list[dict[str, Any]]) -> None:
    """Every number of ``rerun`` against the same place in ``committed`` (timings and counts of queries left out)."""
    if isinstance(rerun, dict):
        for k, v in rerun.items():
            if "seconds" not in k and "queries" not in k and k in committed:
                compare(committed[k], v, f"{path}.{k}", rows)
    elif isinstance(rerun, list):
        for i, (c, r) in enumerate(zip(committed, rerun, strict=True)):
            compare(c, r, f"{path}[{i}]", rows)
    elif isinstance(rerun, (int, float)) and not isinstance(rerun, bool):
        rows.append({"what": path, "committed": committed, "rerun": rerun,
                     "matches": abs(float(committed) - float(rerun)) <= TOL})


def main() -> None:
    torch.set_num_threads(1)
    attacks = json.loads((RESULTS / "attacks.json").read_text())
    apgd = json.loads((RESULTS / "apgd_vs_pgd.json").read_text())
    rows: list[dict[str, Any]] = []
    data = heldout(attacks["strength"]["n"])
    compare(attacks["strength"], strength(pretrained("mnist-cnn"), data.images, data.labels), "attacks.json:strength",
            rows)
    source = attacks["logreg_fgsm"]["data"]
    logreg_data = load_dataset("mnist", "test", data_dir=SHARED) if source.startswith("MNIST test") else \
        load_dataset("mnist-5k", "all")
    compare(attacks["logreg_fgsm"]["rows"], logreg_errors(logreg_data), "attacks.json:logreg_fgsm", rows)
    compare(apgd["models"], apgd_vs_pgd(apgd), "apgd_vs_pgd.json:models", rows)
    bad = [r for r in rows if not r["matches"]]
    path = write("reproduce.json", {"tolerance": TOL, "numbers": len(rows), "differ": len(bad), "rows": rows})
    for r in bad:
        print(f"differs: {r['what']}: committed {r['committed']}, rerun {r['rerun']}")
    print(f"{len(rows) - len(bad)} of {len(rows)} numbers reproduce -> {path}")


if __name__ == "__main__":
    main()
