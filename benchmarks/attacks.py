"""Attack strength and speed on the shipped mnist-cnn (issue: gradient attacks).

    python benchmarks/attacks.py [--n 1000] [--repeats 3] [--quick]

Writes benchmarks/results/attacks.json (and logreg_fgsm_eps.png). Measures:
* clean accuracy and robust accuracy under FGSM eps 0.1/0.2/0.3, BIM (10 steps) and PGD-40 (step 0.01) at 0.3;
* PGD-40 time / a minimal hand-written PyTorch PGD loop on the same model and images (the floor: 40
  forward+backward passes), interleaved and repeated, median ratio; with bastion's early stop on and off;
* the same PGD in torchattacks / ART / foolbox when installed (pip install -e ".[peers]");
* the seed's epsilon table for softmax regression (logreg) under FGSM on the MNIST test set.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from _common import SHARED, heldout, write

from bastion.attacks import BIM, FGSM, PGD
from bastion.models import pretrained

EPS, ALPHA, STEPS = 0.3, 0.01, 40


def floor_pgd(model, x, y, noise):
    """The minimal PGD loop: 40 forward+backward passes, nothing else (parameters frozen, as in bastion)."""
    x_adv = (x + noise).clamp(0, 1)
    for _ in range(STEPS):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        (g,) = torch.autograd.grad(loss, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + ALPHA * g.sign(), x - EPS), x + EPS).clamp(0, 1)
    return x_adv


def peers(model, x, y, repeats: int) -> dict:
    """PGD-40 (eps 0.3, step 0.01, random start) of every installed peer and of bastion on the same model and
    images, interleaved ``repeats`` times (median seconds), with the robust accuracy each leaves."""
    runners = {}
    try:
        import torchattacks

        tatk = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)
        runners["torchattacks"] = lambda: tatk(x, y)
    except ImportError:
        pass
    try:
        from art.attacks.evasion import ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier

        clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                                clip_values=(0.0, 1.0))
        aatk = ProjectedGradientDescent(clf, norm=float("inf"), eps=EPS, eps_step=ALPHA, max_iter=STEPS,
                                        num_random_init=1, batch_size=len(x), verbose=False)
        runners["art"] = lambda: torch.from_numpy(aatk.generate(x.numpy()))
    except ImportError:
        pass
    try:
        import foolbox as fb

        fmodel = fb.PyTorchModel(model, bounds=(0, 1))
        fatk = fb.attacks.LinfPGD(abs_stepsize=ALPHA, steps=STEPS, random_start=True)
        runners["foolbox"] = lambda: fatk(fmodel, x, y, epsilons=EPS)[1]
    except ImportError:
        pass
    if not runners:
        return {"note": "no peer installed (pip install -e '.[peers]')"}
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    runners["bastion_default"] = lambda: PGD(eps=EPS, steps=STEPS, step_size=ALPHA)(model, x, y, generator=g()).x_adv
    runners["bastion_no_early_stop"] = lambda: PGD(eps=EPS, steps=STEPS, step_size=ALPHA, early_stop=False)(
        model, x, y, generator=g()).x_adv
    times: dict[str, list[float]] = {k: [] for k in runners}
    acc = {}
    for _ in range(repeats):
        for name, run in runners.items():
            t0 = time.perf_counter()
            xa = run()
            times[name].append(time.perf_counter() - t0)
            model.eval()  # a peer may leave the model in another mode
            with torch.no_grad():
                acc[name] = float((model(xa).argmax(1) == y).float().mean())
    out = {name: {"seconds": times[name], "median_seconds": statistics.median(times[name]), "robust_accuracy": acc[name]}
           for name in runners}
    fastest_peer = min((k for k in out if not k.startswith("bastion")), key=lambda k: out[k]["median_seconds"])
    out["bastion_default_over_fastest_peer"] = out["bastion_default"]["median_seconds"] / out[fastest_peer]["median_seconds"]
    out["fastest_peer"] = fastest_peer
    out["strongest_peer_robust_accuracy"] = min(v["robust_accuracy"] for k, v in out.items()
                                                if isinstance(v, dict) and not k.startswith("bastion"))
    return out


def logreg_errors(data) -> list[dict[str, float]]:
    """The shipped softmax regression's FGSM error on ``data`` at each eps of the lecture's table and between."""
    model = pretrained("logreg")
    rows = []
    for eps in (0.0, 0.05, 0.1, 0.2, 0.3, 0.5):
        errs = []
        for i in range(0, len(data), 2000):
            r = FGSM(eps=eps)(model, data.images[i : i + 2000], data.labels[i : i + 2000])
            errs.append((~r.robust).float())
        rows.append({"eps": eps, "error": float(torch.cat(errs).mean())})
    return rows


def strength(model, x, y) -> dict:
    """Clean accuracy and FGSM (0.1/0.2/0.3), BIM-10 and PGD-40 (step 0.01) summaries at 0.3 on ``(x, y)``."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        out = {"n": len(y), "clean_accuracy": float((model(x).argmax(1) == y).float().mean())}
    for eps in (0.1, 0.2, 0.3):
        out[f"fgsm_{eps}"] = FGSM(eps=eps)(model, x, y).summary()
    out["bim_0.3"] = BIM(eps=0.3, steps=10)(model, x, y).summary()
    out["pgd40_0.3"] = PGD(eps=0.3, steps=40, step_size=0.01)(model, x, y, generator=g).summary()
    return out


def logreg_table(quick: bool):
    from bastion.data import load_dataset

    try:
        data = load_dataset("mnist", "test", data_dir=SHARED)
        source = "MNIST test (10,000)"
    except Exception:  # noqa: BLE001 - fall back to the embedded held-out set
        data = load_dataset("mnist-5k", "all")
        source = "mnist-5k (5,000 held-out MNIST training images)"
    if quick:
        data = data.spread(1000)  # evenly spaced: mnist-5k is sorted by label
    rows = logreg_errors(data)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot([r["eps"] for r in rows], [r["error"] for r in rows], "o-", label="bastion logreg (measured)")
    ax.plot([0, 0.2, 0.5], [0.029, 0.076, 0.226], "s--", label="seed's quoted numbers")
    ax.set_xlabel("eps (Linf, pixels in [0,1])")
    ax.set_ylabel("test error")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.savefig("benchmarks/results/logreg_fgsm_eps.png", dpi=120, bbox_inches="tight")
    return {"data": source, "n": len(data), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 200 if args.quick else args.n
    data = heldout(n)
    x, y = data.images, data.labels
    model = pretrained("mnist-cnn")
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    measured = strength(model, x, y)

    # speed: interleave floor / bastion(no early stop) / bastion(default), repeat, median
    noise = (torch.rand(x.shape, generator=g()) * 2 - 1) * EPS
    for p in model.parameters():
        p.requires_grad_(False)
    times = {"floor": [], "bastion_no_early_stop": [], "bastion_default": []}
    accs = {}
    full = PGD(eps=EPS, steps=STEPS, step_size=ALPHA, early_stop=False)
    default = PGD(eps=EPS, steps=STEPS, step_size=ALPHA)
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        xa = floor_pgd(model, x, y, noise)
        times["floor"].append(time.perf_counter() - t0)
        with torch.no_grad():
            accs["floor"] = float((model(xa).argmax(1) == y).float().mean())
        r = full(model, x, y, generator=g())
        times["bastion_no_early_stop"].append(r.seconds)
        accs["bastion_no_early_stop"] = float(r.robust.float().mean())
        r = default(model, x, y, generator=g())
        times["bastion_default"].append(r.seconds)
        accs["bastion_default"] = float(r.robust.float().mean())
    for p in model.parameters():
        p.requires_grad_(True)
    med = {k: statistics.median(v) for k, v in times.items()}
    speed = {
        "seconds": times, "median_seconds": med, "robust_accuracy": accs,
        "ratio_no_early_stop_over_floor": med["bastion_no_early_stop"] / med["floor"],
        "ratio_default_over_floor": med["bastion_default"] / med["floor"],
        "bar": "<= 1.05",
    }
    result = {"strength": measured, "speed": speed, "peers": peers(model, x, y, args.repeats), "logreg_fgsm": logreg_table(args.quick)}
    path = write("attacks.json" if not args.quick else "attacks_quick.json", result)
    print(path)
    print({k: round(v, 4) for k, v in speed.items() if k.startswith("ratio")})
    print({k: (v["robust_accuracy"] if isinstance(v, dict) and "robust_accuracy" in v else v) for k, v in strength.items()})


if __name__ == "__main__":
    main()
