"""Minimum-norm attacks (CW-L2, DeepFool, FMN) beside foolbox, torchattacks, ART and the FMN authors' code.

    python benchmarks/min_norm.py [--part cw|deepfool|fmn|all] [--n 100] [--threads 1]
                                  [--fmn-original PATH/src/attacks/fmn.py]

Writes benchmarks/results/min_norm.json (parts run again replace their section; the others are kept). All on the
shipped ``mnist-cnn`` and held-out images of mnist-5k (``_common.heldout``), untargeted, on one thread by default
(the machine is shared; every ratio is measured within one run).

* ``cw``: bastion's ``CW`` and foolbox's ``L2CarliniWagnerAttack`` with the same budget (``--cw-steps`` Adam steps
  for each of ``--cw-search`` values of c, from 1e-3, step size 0.01, early abort), on ``--n`` images: success
  and median L2 (each over its own successes, and the per-image ratio where both succeed). torchattacks' ``CW``
  has no search over c: it is compared with bastion's at one fixed ``c`` (``--cw-c``, one search step). ART's
  ``CarliniL2Method`` is slow, so it runs on the first ``--art-n`` images with a smaller budget
  (``--art-steps``, ``--art-search``, the same for bastion), interleaved ``--art-reps`` times: the speed-up is
  ART's median time over bastion's, with both attacks' success and median L2.
* ``deepfool``: bastion's ``DeepFool`` (L2 and Linf, 50 steps, overshoot 0.02, 10 candidate classes) on
  ``--df-n`` images, beside torchattacks' ``DeepFool`` (L2; steps 50, overshoot 0.02) and foolbox's
  ``L2DeepFoolAttack`` / ``LinfDeepFoolAttack`` (same settings) on the same images: success, median norm, seconds.
* ``fmn``: bastion's ``FMN`` in L0, L1, L2 and Linf (``--fmn-steps``, the paper's defaults otherwise) beside
  foolbox's FMN attacks and, with ``--fmn-original``, the authors' own code (the file ``src/attacks/fmn.py`` of
  https://github.com/maurapintor/Fast-Minimum-Norm-FMN-Attack, which needs foolbox), on ``--n`` images. foolbox's
  L2 version leaves out the projection onto the L2 ball (its ``project`` scales by ``norms / norms``), so it is
  not the paper's L2 attack.

Success is judged here, on the model, for every tool alike (a result that is all zeros counts as a failure:
foolbox's CW returns zeros for the inputs it did not fool).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from typing import Any

import torch
from _common import RESULTS, environment, heldout

from bastion.attacks import CW, FMN, DeepFool
from bastion.models import pretrained

OUT = RESULTS / "min_norm.json"


def norms(x_adv: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
    d = (x_adv - x).flatten(1).double()
    return {"l0": (d.abs() > 1e-7).sum(1).double(), "l1": d.abs().sum(1), "l2": d.norm(dim=1), "linf": d.abs().amax(1)}


def judged(model: torch.nn.Module, x_adv: torch.Tensor, x: torch.Tensor, y: torch.Tensor, norm: str,
           seconds: float) -> dict[str, Any]:
    """Success (on the model) and the norms of one tool's result."""
    model.eval()  # a peer may leave the model in another mode
    with torch.no_grad():
        ok = (model(x_adv).argmax(1) != y) & (x_adv.flatten(1).abs().sum(1) > 0)
    nv = norms(x_adv, x)[norm]
    return {"success_rate": float(ok.double().mean()), "median": float(nv[ok].median()) if bool(ok.any()) else None,
            "mean": float(nv[ok].mean()) if bool(ok.any()) else None, "seconds": seconds,
            "_ok": ok, "_norms": nv}


def timed(fn):  # noqa: ANN001, ANN202
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def public(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if not k.startswith("_")}


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """bastion (``a``) against a peer (``b``) where both succeeded (the per-image ratios leave out the images the
    model already gets wrong: both return them unchanged)."""
    both = a["_ok"] & b["_ok"]
    if not bool(both.any()):
        return {"both_succeeded": 0}
    moved = both & (b["_norms"] > 0)
    ratio = a["_norms"][moved] / b["_norms"][moved]
    return {"both_succeeded": int(both.sum()), "median_bastion_on_both": float(a["_norms"][both].median()),
            "median_peer_on_both": float(b["_norms"][both].median()),
            "median_ratio_bastion_over_peer": float(a["_norms"][both].median() / b["_norms"][both].median()),
            "per_image_ratio_median": float(ratio.median()) if ratio.numel() else None,
            "per_image_ratio_min": float(ratio.min()) if ratio.numel() else None,
            "per_image_ratio_max": float(ratio.max()) if ratio.numel() else None}


def part_cw(model, x, y, args, log) -> dict[str, Any]:  # noqa: ANN001
    out: dict[str, Any] = {"settings": {"steps": args.cw_steps, "search_steps": args.cw_search, "lr": 0.01,
                                        "initial_const": 1e-3, "abort_early": True, "n": len(x)}}
    atk = CW(steps=args.cw_steps, search_steps=args.cw_search, lr=0.01, initial_const=1e-3)
    import foolbox as fb

    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    fatk = fb.attacks.L2CarliniWagnerAttack(binary_search_steps=args.cw_search, steps=args.cw_steps, stepsize=0.01,
                                            initial_const=1e-3, abort_early=True)
    xa_f, sec_f = timed(lambda: fatk(fmodel, x, y, epsilons=None)[1])
    res, sec_b = timed(lambda: atk(model, x, y).x_adv)
    b, f = judged(model, res, x, y, "l2", sec_b), judged(model, xa_f, x, y, "l2", sec_f)
    out["foolbox"] = {"version": fb.__version__, "bastion": public(b), "foolbox": public(f), "on_both": compare(b, f),
                      "median_ratio_own_successes": (b["median"] / f["median"]) if b["median"] and f["median"] else None}
    log(f"CW vs foolbox: bastion {b['success_rate']:.3f} success, median L2 {b['median']}, {sec_b:.0f} s; "
        f"foolbox {f['success_rate']:.3f}, {f['median']}, {sec_f:.0f} s; on both {out['foolbox']['on_both']}")
    try:
        import torchattacks
    except ImportError:
        out["torchattacks"] = "not installed (pip install --no-deps torchattacks)"
    else:
        tatk = torchattacks.CW(model, c=args.cw_c, kappa=0, steps=args.cw_steps, lr=0.01)
        xa_t, sec_t = timed(lambda: tatk(x, y))
        one = CW(steps=args.cw_steps, search_steps=1, lr=0.01, initial_const=args.cw_c)
        res1, sec_1 = timed(lambda: one(model, x, y).x_adv)
        b1, t = judged(model, res1, x, y, "l2", sec_1), judged(model, xa_t, x, y, "l2", sec_t)
        out["torchattacks"] = {"version": torchattacks.__version__, "c": args.cw_c, "note": "one c, no search "
                               "(torchattacks has none); bastion with search_steps=1 at the same c",
                               "bastion": public(b1), "torchattacks": public(t), "on_both": compare(b1, t)}
        log(f"CW c={args.cw_c} vs torchattacks: bastion {b1['success_rate']:.3f}, median {b1['median']}, "
            f"{sec_1:.0f} s; torchattacks {t['success_rate']:.3f}, {t['median']}, {sec_t:.0f} s")
    out["art"] = art_cw(model, x[: args.art_n], y[: args.art_n], args, log)
    return out


def art_cw(model, x, y, args, log) -> dict[str, Any]:  # noqa: ANN001
    try:
        import art
        from art.attacks.evasion import CarliniL2Method
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        return {"note": "not installed (pip install -e '.[peers]')"}
    clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                            nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")
    aatk = CarliniL2Method(clf, confidence=0.0, learning_rate=0.01, binary_search_steps=args.art_search,
                           max_iter=args.art_steps, initial_const=1e-3, batch_size=len(x), verbose=False)
    atk = CW(steps=args.art_steps, search_steps=args.art_search, lr=0.01, initial_const=1e-3)
    times: dict[str, list[float]] = {"art": [], "bastion": []}
    results: dict[str, dict[str, Any]] = {}
    for rep in range(args.art_reps):
        xa, sec = timed(lambda: torch.from_numpy(aatk.generate(x.numpy())).reshape(x.shape))
        times["art"].append(sec)
        results["art"] = judged(model, xa, x, y, "l2", sec)
        xb, sec = timed(lambda: atk(model, x, y).x_adv)
        times["bastion"].append(sec)
        results["bastion"] = judged(model, xb, x, y, "l2", sec)
        log(f"ART CW rep {rep}: ART {times['art'][-1]:.1f} s, bastion {times['bastion'][-1]:.1f} s")
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"version": art.__version__, "n": len(x), "steps": args.art_steps, "search_steps": args.art_search,
           "batch_size": len(x), "seconds": times, "median_seconds": med, "speedup": med["art"] / med["bastion"],
           "speedup_per_round": [a / b for a, b in zip(times["art"], times["bastion"], strict=True)],
           "art": public(results["art"]), "bastion": public(results["bastion"])}
    log(f"CW speed-up over ART: {out['speedup']:.1f}x (ART {results['art']['success_rate']:.2f} success, median "
        f"{results['art']['median']}; bastion {results['bastion']['success_rate']:.2f}, {results['bastion']['median']})")
    return out


def part_deepfool(model, x, y, args, log) -> dict[str, Any]:  # noqa: ANN001
    out: dict[str, Any] = {"n": len(x), "settings": {"steps": 50, "overshoot": 0.02, "candidates": 10}}
    for norm in ("l2", "linf"):
        res, sec = timed(lambda norm=norm: DeepFool(norm=norm, steps=50, overshoot=0.02)(model, x, y))
        out[f"bastion_{norm}"] = {**public(judged(model, res.x_adv, x, y, norm, sec)),
                                  "mean_steps": float(res.queries.double().mean())}
        log(f"DeepFool-{norm} bastion: {out[f'bastion_{norm}']}")
    try:
        import torchattacks
    except ImportError:
        out["torchattacks"] = "not installed (pip install --no-deps torchattacks)"
    else:
        tatk = torchattacks.DeepFool(model, steps=50, overshoot=0.02)
        xa, sec = timed(lambda: tatk(x, y))
        out["torchattacks_l2"] = {"version": torchattacks.__version__, **public(judged(model, xa, x, y, "l2", sec))}
        log(f"DeepFool-l2 torchattacks: {out['torchattacks_l2']}")
    import foolbox as fb

    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    for norm, cls in (("l2", fb.attacks.L2DeepFoolAttack), ("linf", fb.attacks.LinfDeepFoolAttack)):
        fatk = cls(steps=50, candidates=10, overshoot=0.02)
        xa, sec = timed(lambda fatk=fatk: fatk(fmodel, x, y, epsilons=None)[1])
        out[f"foolbox_{norm}"] = {"version": fb.__version__, **public(judged(model, xa, x, y, norm, sec))}
        log(f"DeepFool-{norm} foolbox: {out[f'foolbox_{norm}']}")
    return out


def load_original_fmn(path: str) -> Any:
    spec = importlib.util.spec_from_file_location("fmn_original", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def part_fmn(model, x, y, args, log) -> dict[str, Any]:  # noqa: ANN001
    import foolbox as fb

    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    peers = {"foolbox": {"l0": fb.attacks.L0FMNAttack, "l1": fb.attacks.L1FMNAttack, "l2": fb.attacks.L2FMNAttack,
                         "linf": fb.attacks.LInfFMNAttack}}
    if args.fmn_original:
        orig = load_original_fmn(args.fmn_original)
        peers["original"] = {"l0": orig.L0FMNAttack, "l1": orig.L1FMNAttack, "l2": orig.L2FMNAttack,
                             "linf": orig.LInfFMNAttack}
    out: dict[str, Any] = {"n": len(x), "steps": args.fmn_steps, "foolbox_version": fb.__version__,
                           "original": args.fmn_original and "the authors' src/attacks/fmn.py (via foolbox)"}
    for norm in ("l0", "l1", "l2", "linf"):
        res, sec = timed(lambda norm=norm: FMN(norm=norm, steps=args.fmn_steps)(model, x, y).x_adv)
        b = judged(model, res, x, y, norm, sec)
        row: dict[str, Any] = {"bastion": public(b)}
        for peer, classes in peers.items():
            patk = classes[norm](steps=args.fmn_steps)
            xa, psec = timed(lambda patk=patk: patk(fmodel, x, y, epsilons=None)[1])
            p = judged(model, xa, x, y, norm, psec)
            row[peer] = public(p)
            row[f"on_both_{peer}"] = compare(b, p)
        out[norm] = row
        log(f"FMN-{norm}: " + "; ".join(f"{k} {v['success_rate']:.2f} success, median {v['median']}"
                                        for k, v in row.items() if not k.startswith("on_both")))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["cw", "deepfool", "fmn", "all"], default="all")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cw-steps", type=int, default=1000)
    ap.add_argument("--cw-search", type=int, default=9)
    ap.add_argument("--cw-c", type=float, default=1.0)
    ap.add_argument("--art-n", type=int, default=20)
    ap.add_argument("--art-steps", type=int, default=100)
    ap.add_argument("--art-search", type=int, default=5)
    ap.add_argument("--art-reps", type=int, default=2)
    ap.add_argument("--df-n", type=int, default=1000)
    ap.add_argument("--fmn-steps", type=int, default=100)
    ap.add_argument("--fmn-original", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    def log(msg: str) -> None:
        print(msg, flush=True)

    model = pretrained("mnist-cnn")
    for p in model.parameters():
        p.requires_grad_(False)
    previous = json.loads(OUT.read_text()) if OUT.exists() else {}
    payload: dict[str, Any] = {k: v for k, v in previous.items() if k not in ("environment",)}
    payload["benchmark"] = "min_norm"
    payload["model"] = "mnist-cnn"
    payload["threads"] = args.threads
    parts = ["cw", "deepfool", "fmn"] if args.part == "all" else [args.part]
    for part in parts:
        n = args.df_n if part == "deepfool" else args.n
        data = heldout(n)
        x, y = data.images, data.labels
        t0 = time.perf_counter()
        section = {"cw": part_cw, "deepfool": part_deepfool, "fmn": part_fmn}[part](model, x, y, args, log)
        section["images"] = f"{n} evenly spaced images of mnist-5k 'all' (held out)"
        section["wall_seconds"] = time.perf_counter() - t0
        section["environment"] = environment()
        payload[part] = section
        RESULTS.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(payload, indent=2, default=float) + "\n")
        log(f"wrote {OUT} ({part})")


if __name__ == "__main__":
    main()
