"""The README quick start's evaluation of the shipped BaRT model, exactly as written there (issue #19's bar).

    python benchmarks/quickstart_bart.py

``Evaluation(suite=[FGSM(eps=0.3), BIM(eps=0.3), PGD(eps=0.3)], eps_grid=[0.1, 0.2, 0.3],
adaptive={"eot(bpda)": eot(bpda(bart), n=8)}).run(bart, load_dataset("mnist-5k", "test").spread(200))`` with every
default: bastion detects that the model is randomized, so no attack stops early and each image is judged over 8
draws of the barrage. Writes benchmarks/results/quickstart_bart.json: the worst-case accuracy per mode and eps,
every row, the flags and the wall time. Bar: adaptive robust accuracy at eps 0.3 <= 5%.
"""

from __future__ import annotations

import time

from _common import write

from bastion.attacks import BIM, FGSM, PGD, bpda, eot
from bastion.data import load_dataset
from bastion.eval import Evaluation
from bastion.models import pretrained


def main() -> None:
    data = load_dataset("mnist-5k", "test")
    bart = pretrained("mnist-cnn-bart")
    ev = Evaluation(suite=[FGSM(eps=0.3), BIM(eps=0.3), PGD(eps=0.3)], eps_grid=[0.1, 0.2, 0.3],
                    adaptive={"eot(bpda)": eot(bpda(bart), n=8)})
    t0 = time.perf_counter()
    report = ev.run(bart, data.spread(200))
    seconds = time.perf_counter() - t0
    worst = {f"{w['mode']}@{w['eps']}": w["accuracy"] for w in report.worst_case}
    payload = {
        "command": "python benchmarks/quickstart_bart.py", "n": 200, "seconds": seconds,
        "randomized": report.randomized, "draws": report.draws, "clean_accuracy": report.clean_accuracy,
        "worst_case": worst,
        "adaptive_robust_accuracy_eps0.3": worst["adaptive:eot(bpda)@0.3"],
        "naive_robust_accuracy_eps0.3": worst["naive@0.3"],
        "bar": "adaptive robust accuracy at eps 0.3 <= 5%",
        "rows": [r.__dict__ for r in report.rows],
        "flags": [{"code": f.code, "title": f.title} for f in report.flags],
    }
    print(write("quickstart_bart.json", payload))
    print({k: payload[k] for k in ("seconds", "clean_accuracy", "worst_case")})


if __name__ == "__main__":
    main()
