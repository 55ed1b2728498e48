"""Attacks, Grad-CAM and an evaluation on 3x224x224 RGB images: time and peak memory, each case in a fresh process.

    python benchmarks/scale_memory.py [--cases a,b,...] [--threads N]

Writes ``benchmarks/results/scale_memory.json``. The model is a randomly initialised ResNet-18 built from
torch.nn (``benchmarks/_resnet.py``; no torchvision, no pretrained weights) behind ImageNet mean/std
normalization, in eval mode, on CPU; inputs are uniform random images in [0, 1]. Its predictions mean nothing,
but its cost (1.8 GFLOPs a forward pass) is a real ResNet-18's.

Each case runs in its own subprocess, which reports its peak resident memory both as ``VmHWM`` from
/proc/self/status and as ``getrusage(RUSAGE_SELF).ru_maxrss``, its wall and CPU time, and the load average
before and after (the machine's cores are shared: wall times under load are pessimistic, and two torch threads
competing with other processes for two cores can run several times slower than one). Cases:

* ``baseline``: imports, the model, 32 images and one forward pass: what every case pays before attacking.
* ``pgd10-batch32`` (bar: peak RSS < 3 GiB): PGD, Linf eps 4/255, 10 steps of 1/255, every step run
  (``early_stop=False``), on 32 images in one call; ``pgd10-batch32-one-pass`` is the same with the gradient
  passes on the whole batch at once (``GRAD_CHUNK_FEATURES`` raised), for comparison.
* ``fgsm-batch32``, ``bim10-batch32``: FGSM and BIM (10 steps) at eps 4/255 on 32 images.
* ``square-batch4``: Square (score-based), eps 4/255, 100 queries, ``p_init=0.05`` (the paper's ImageNet value),
  on 4 images.
* ``jsma-large-1pct`` (bar: < 60 s and peak RSS < 2 GiB): ``JSMA.large_input`` with a budget of 1% of the
  features (1,505 of 150,528) on one image, targeted at its least likely class (a target it rarely reaches:
  the whole budget is spent), ``jsma-large-1pct-one-thread`` (the same run with one torch thread) and
  ``jsma-large-1pct-untargeted``; ``jsma-large-1pct-exact-search`` is the same
  targeted run with the exhaustive pair search (``candidates=None``); ``jsma-paper-10-steps`` runs 10 steps
  of the paper's algorithm (one pair a step) on the same image, from which the time of the 752 steps a 1%
  budget needs is extrapolated.
* ``gradcam-batch32``: Grad-CAM of the predicted class at the default layer, upsampled to 224x224, 32 images.
* ``evaluate-64``: ``Evaluation(suite=[FGSM, PGD-10], eps_grid=[2/255, 4/255])`` on 64 images with the default
  batch size (55 images of 3x224x224 per attack call) and 8 check images.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

from _common import RESULTS, environment

EPS = 4 / 255
FEATURES = 3 * 224 * 224
BUDGET = FEATURES // 100  # 1% of the features: 1,505
CASES = ["baseline", "pgd10-batch32", "pgd10-batch32-one-pass", "fgsm-batch32", "bim10-batch32", "square-batch4",
         "jsma-large-1pct", "jsma-large-1pct-one-thread", "jsma-large-1pct-untargeted", "jsma-large-1pct-exact-search",
         "jsma-paper-10-steps", "gradcam-batch32", "evaluate-64"]
#: cases run with one torch thread whatever ``--threads`` says (on a machine shared with other workers, two
#: threads on two cores can wait on each other far longer than one thread computes)
ONE_THREAD = {"jsma-large-1pct-one-thread"}
BARS = {"pgd10-batch32": {"peak_gib": 3.0}, "jsma-large-1pct": {"peak_gib": 2.0, "seconds": 60.0}}


def vm_hwm_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def summary(res: Any) -> dict[str, Any]:
    return {"success_rate": float(res.success.float().mean()), "mean_l0": float(res.norms["l0"].mean()),
            "max_l0": float(res.norms["l0"].max()), "max_linf": float(res.norms["linf"].max()),
            "mean_queries": float(res.queries.float().mean())}


def child(case: str, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    from _resnet import random_resnet18

    from bastion import _model
    from bastion.attacks import BIM, FGSM, JSMA, PGD, Square

    model = random_resnet18(seed=0)
    n = 64 if case == "evaluate-64" else 4 if case == "square-batch4" else 1 if case.startswith("jsma") else 32
    x = torch.rand(n, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = _model.forward_in_chunks(model, x)
    y = logits.argmax(1)  # attack the model's own predictions: every image starts correct
    out: dict[str, Any] = {"case": case, "images": n, "threads": threads, "load_before": os.getloadavg()}
    gen = torch.Generator().manual_seed(0)
    t0, c0 = time.perf_counter(), time.process_time()
    if case == "baseline":
        pass
    elif case.startswith("pgd10"):
        if case.endswith("one-pass"):
            _model.GRAD_CHUNK_FEATURES = 1 << 40
        res = PGD(eps=EPS, steps=10, step_size=1 / 255, early_stop=False)(model, x, y, generator=gen)
        out.update(summary(res))
    elif case == "fgsm-batch32":
        out.update(summary(FGSM(eps=EPS)(model, x, y)))
    elif case == "bim10-batch32":
        out.update(summary(BIM(eps=EPS, steps=10)(model, x, y)))
    elif case == "square-batch4":
        out.update(summary(Square(eps=EPS, max_queries=100, p_init=0.05)(model, x, y, generator=gen)))
    elif case.startswith("jsma-large"):
        target = None if case.endswith("untargeted") else logits.argmin(1)
        atk = JSMA.large_input(BUDGET)
        if case.endswith("exact-search"):
            atk = JSMA(max_features=BUDGET, per_step=atk.per_step, candidates=None)
        out["attack"] = atk.to_dict()
        res = atk(model, x, y, target=target)
        out.update(summary(res))
        out["jacobians"] = int(res.queries[0])
    elif case == "jsma-paper-10-steps":
        atk = JSMA(max_features=20)  # the paper's algorithm: one pair a step, so 10 steps
        res = atk(model, x, y, target=logits.argmin(1))
        out.update(summary(res))
        out["jacobians"] = int(res.queries[0])
    elif case == "gradcam-batch32":
        from bastion.viz import grad_cam, upsample

        maps = upsample(grad_cam(model, x), (224, 224))
        out["maps_shape"] = list(maps.shape)
    elif case == "evaluate-64":
        from bastion.data.base import ImageDataset
        from bastion.eval import Evaluation

        data = ImageDataset(name="random-224", split="all", images=x, labels=y,
                            classes=tuple(str(i) for i in range(1000)))
        ev = Evaluation(suite=[FGSM(eps=EPS), PGD(eps=EPS, steps=10, step_size=1 / 255)], eps_grid=[2 / 255, EPS],
                        check_images=8)
        out["batch_size"] = ev.batch_for(data)
        rep = ev.run(model, data, keep_per_image=False)
        out["rows"] = [{"attack": r.attack, "eps": r.eps, "accuracy": r.accuracy} for r in rep.rows]
        out["flags"] = [f.code for f in rep.flags]
    else:
        raise SystemExit(f"unknown case {case}")
    out["seconds"] = time.perf_counter() - t0
    out["cpu_seconds"] = time.process_time() - c0  # all threads: less sensitive to other workers than wall time
    out["load_after"] = os.getloadavg()
    out["vm_hwm_mib"] = vm_hwm_mib()
    out["ru_maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--output", default="scale_memory.json", help="file name under benchmarks/results")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.threads)
        return
    out: dict[str, Any] = {"benchmark": "scale_memory", "environment": environment(), "eps": EPS,
                           "jsma_budget_features": BUDGET, "bars": BARS, "cases": {}}
    for case in args.cases.split(","):
        threads = 1 if case in ONE_THREAD else args.threads
        proc = subprocess.run([sys.executable, __file__, "--child", case, "--threads", str(threads)],
                              capture_output=True, text=True, check=False)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            out["cases"][case] = {"error": proc.stderr[-2000:]}
            print(f"{case}: FAILED\n{proc.stderr[-2000:]}", flush=True)
            continue
        rec = json.loads(line[len("RESULT "):])
        rec["peak_gib"] = max(rec["vm_hwm_mib"], rec["ru_maxrss_mib"]) / 1024
        bar = BARS.get(case)
        if bar:
            rec["meets_bar"] = rec["peak_gib"] < bar["peak_gib"] and rec["seconds"] < bar.get("seconds", float("inf"))
        out["cases"][case] = rec
        print(f"{case}: {rec['seconds']:.1f} s, peak RSS {rec['vm_hwm_mib']:.0f} MiB (load {rec['load_before'][0]:.1f}"
              f" -> {rec['load_after'][0]:.1f})" + (f", success {rec['success_rate']:.2f}" if "success_rate" in rec else "")
              + (f", {rec['jacobians']} Jacobians, L0 {rec['max_l0']:.0f}" if "jacobians" in rec else ""), flush=True)
    paper = out["cases"].get("jsma-paper-10-steps", {})
    if "seconds" in paper and paper.get("jacobians"):
        out["jsma_paper_1pct_estimated_seconds"] = paper["seconds"] / paper["jacobians"] * (BUDGET // 2)
    out["load_average_at_end"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / args.output
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
