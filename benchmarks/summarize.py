"""Headline numbers of every committed benchmark result, as the Markdown table in the README.

    python benchmarks/summarize.py

Reads benchmarks/results/*.json (written by the other scripts in this folder) and prints one row per
measurement: what, the number, the bar it is held to, and the script that produced it. Results that are
missing are listed as such; nothing here is typed in by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def rows() -> list[tuple[str, str, str, str]]:
    out: list[tuple[str, str, str, str]] = []
    add = out.append

    a = load("attacks.json")
    if a:
        s = a["strength"]
        add(("mnist-cnn: clean / FGSM 0.1, 0.2, 0.3 / BIM 0.3 / PGD-40 0.3 (1,000 held-out)",
             " / ".join(pct(v) for v in [s["clean_accuracy"]] + [s[k]["robust_accuracy"] for k in
                                         ("fgsm_0.1", "fgsm_0.2", "fgsm_0.3", "bim_0.3", "pgd40_0.3")]),
             "PGD-40 < 1%", "attacks.py"))
        sp = a["speed"]
        add(("PGD-40 time / hand-written 40-step loop (no early stop; default)",
             f"{sp['ratio_no_early_stop_over_floor']:.3f}; {sp['ratio_default_over_floor']:.3f}", "<= 1.05", "attacks.py"))
        p = a["peers"]
        if "fastest_peer" in p:
            peers = ", ".join(f"{k} {v['median_seconds']:.2f}s/{pct(v['robust_accuracy'])}" for k, v in p.items()
                              if isinstance(v, dict))
            add(("PGD-40 vs peers (median s / robust acc.)", peers,
                 "as fast as the fastest, robust acc. <= strongest + 0.2 pp", "attacks.py"))
        lr = a["logreg_fgsm"]
        add((f"logreg FGSM error on {lr['data']}, eps " + "/".join(str(r["eps"]) for r in lr["rows"]),
             " / ".join(pct(r["error"]) for r in lr["rows"]), "seed: 2.9% / 7.6% at 0.2 / 22.6% at 0.5", "attacks.py"))

    for path in sorted(RESULTS.glob("autoattack-*.json")):
        aa = json.loads(path.read_text())
        ref = aa["reference"].split()[0]
        add((f"AutoAttack (standard, {aa['steps']} steps) on {aa['model']}, eps {aa['eps']:g}, {aa['n']:,} held-out: "
             f"robust accuracy bastion vs {ref}; time bastion / {ref} (interleaved)",
             f"{pct(aa['bastion_robust_accuracy'])} vs {pct(aa['reference_robust_accuracy'])} "
             f"({aa['difference_pp']:+.1f} pp; {len(aa['robust_in_bastion_broken_by_reference'])} images robust in bastion "
             f"only); {aa['time_ratio_bastion_over_reference']:.2f}x",
             "<= reference + 0.5 pp; <= 1x",
             f"autoattack.py agreement --model {aa['model']} --eps {aa['eps']:g} --n {aa['n']} --steps {aa['steps']}"
             + ("" if path.name == f"autoattack-{aa['model']}-{aa['steps']}.json" else f" --out {path.name}")))
    ap = load("apgd_vs_pgd.json")
    if ap:
        cells = "; ".join(f"{name} {pct(r['apgd_ce']['robust_accuracy'])} / {pct(r['pgd100']['robust_accuracy'])}"
                          for name, r in ap["models"].items())
        add(("APGD-CE vs PGD-100 at eps 0.3, robust accuracy per shipped model (mnist-cnn-bart through eot(bpda))",
             cells, "APGD <= PGD on each",
             "autoattack.py apgd-vs-pgd --n {} --bart-n {}".format(
                 max(r["n"] for r in ap["models"].values()),
                 min(r["n"] for r in ap["models"].values()))))
    fs = load("fgsm_speed.json")
    if fs and "by_threads" not in fs and "ratio_of_medians" in fs:  # a run with one --threads value
        fs = {**fs, "by_threads": {str(fs["threads"]): fs}}
    if fs and "by_threads" in fs:
        add(("FGSM time / hand-written FGSM, 1,000 images (median of rounds; ratio of medians), by torch threads",
             "; ".join(f"{t} thread{'s' if t != '1' else ''}: {r['ratio_median_of_rounds']:.2f} / "
                       f"{r['ratio_of_medians']:.2f}" for t, r in fs["by_threads"].items()), "<= 1.5",
             "fgsm_speed.py"))

    j = load("jsma.json")
    if j:
        for out_kind in ("logits", "probs"):
            r = j["paper_setting_targeted"][out_kind]
            add((f"JSMA ({out_kind}) 100 images x 9 targets: success / mean L0", f"{pct(r['success_rate'])} / "
                 f"{r['mean_l0_pct_all']:.2f}%", ">= 97% / <= 4.5%", "jsma.py"))
        art = j.get("art", {})
        if "speed" in art:
            q, sp = art["quality_all_pairs"]["art"], art["speed"]
            floor = sp.get("bastion_over_floor")
            add(("JSMA speed-up over ART SaliencyMapMethod, 900 attacks (logits; probs)",
                 f"{sp['speedup_logits_vs_art']:.1f}x; {sp['speedup_probs_vs_art']:.1f}x "
                 f"(ART: {pct(q['success_rate'])}, L0 {q['mean_l0_pct_all']:.2f}%"
                 + (f"; bastion at {floor['logits']:.2f}x / {floor['probs']:.2f}x the time of its forward and "
                    f"backward passes alone, ART at {sp['art_over_probs_floor']:.1f}x the probs one)" if floor else ")"),
                 ">= 10x", "jsma.py"))
    if j and "models" in j:
        default = j.get("default_output", {}).get("default", "probs")
        for name, mj in j["models"].items():
            art = mj.get("art", {})
            if "quality_all_pairs" not in art:
                continue
            q, sp = art["quality_all_pairs"], art["speed"]
            b, a = q[f"bastion_{default}"], q["art"]
            add((f"JSMA default ({default}) vs ART on {name}, 900 attacks: success / mean L0 / speed-up",
                 f"{pct(b['success_rate'])} / {b['mean_l0_pct_all']:.2f}% / {sp[f'speedup_{default}_vs_art']:.1f}x "
                 f"(ART {pct(a['success_rate'])} / {a['mean_l0_pct_all']:.2f}%)",
                 "success >= ART's, L0 <= ART's", "jsma.py"))
    m = load("jsma_memory.json")
    if m:
        c = m["cases"]
        add(("JSMA peak RSS: 100x3x32x32 / 1x3x224x224",
             f"{c['cifar-batch100']['vm_hwm_mib']:.0f} MiB / {c['224-single']['vm_hwm_mib']:.0f} MiB", "< 2 GiB / < 4 GiB",
             "jsma_memory.py"))

    sc = load("scale_memory.json")
    if sc:
        c = sc["cases"]

        def cell(case: str) -> str:
            r = c.get(case, {})
            return f"{r['seconds']:.1f} s / {r['vm_hwm_mib']:.0f} MiB" if "seconds" in r else "—"

        pg, one = c.get("pgd10-batch32", {}), c.get("pgd10-batch32-one-pass", {})
        if "seconds" in pg:
            add(("random ResNet-18 (ImageNet-normalized), PGD-10 on 32 images 3x224x224: peak RSS / time (gradient "
                 "passes on the whole batch at once: peak RSS)", f"{pg['vm_hwm_mib']:.0f} MiB / {pg['seconds']:.0f} s"
                 + (f" ({one['vm_hwm_mib']:.0f} MiB)" if "vm_hwm_mib" in one else ""), "< 3 GiB", "scale_memory.py"))
        j = c.get("jsma-large-1pct", {})
        if "seconds" in j:
            est = sc.get("jsma_paper_1pct_estimated_seconds")
            add(("JSMA large-input mode, one 3x224x224 image, budget 1% (1,505 features), targeted at the least "
                 "likely class: time / peak RSS (Jacobians; the paper's one pair a step, extrapolated)",
                 f"{j['seconds']:.1f} s / {j['vm_hwm_mib']:.0f} MiB ({j['jacobians']}"
                 + (f"; ~{est:.0f} s" if est else "") + f"; load {j['load_before'][0]:.1f})",
                 "< 60 s on 2 cores / < 2 GiB", "scale_memory.py"))
        add(("3x224x224 time / peak RSS: FGSM, BIM-10 (32 images); Square 100 queries (4); Grad-CAM (32); "
             "evaluation FGSM+PGD-10 at 2 eps (64)",
             "; ".join(cell(k) for k in ("fgsm-batch32", "bim10-batch32", "square-batch4", "gradcam-batch32",
                                          "evaluate-64")), "reported", "scale_memory.py"))

    b = load("bart_speed.json")
    if b:
        r = b["results"]
        photos = f"; {r['rgb32_photos']['speedup']:.1f}x" if "rgb32_photos" in r else ""
        add(("BaRT k=5 batched vs per-image scikit-image, one thread each (1,000 MNIST; 1,000 random RGB 32x32"
             + ("; 1,000 32x32 photo crops)" if photos else ")"),
             f"{r['mnist']['speedup']:.1f}x; {r['rgb32']['speedup']:.1f}x{photos}", ">= 10x", "bart_speed.py"))
    bk = load("bart_k.json")
    if bk:
        acc = bk["accuracy_through_bart_k"]
        add(("Clean MNIST test accuracy through BaRT(k), k = 1..5: shipped (trained k=2, 2 epochs); k=5, 2 epochs; "
             "k=5, 6 epochs",
             "; ".join(" / ".join(f"{100 * a[f'k{k}']:.1f}" for k in range(1, 6)) for a in acc.values()) + " (%)",
             "k documented", "bart_k.py"))
    ba = load("bart_accuracy.json")
    if ba:
        mb, mc = ba["models"]["mnist-cnn-bart"], ba["models"]["mnist-cnn"]
        add(("mnist-cnn-bart: clean (10k test) / naive FGSM 0.3 / naive PGD-40 0.3",
             f"{pct(mb['clean_accuracy'])} / {pct(mb['fgsm_eps0.3']['robust_accuracy'])} / "
             f"{pct(mb['pgd_eps0.3_40x0.01']['robust_accuracy'])} (mnist-cnn: {pct(mc['fgsm_eps0.3']['robust_accuracy'])}"
             f" / {pct(mc['pgd_eps0.3_40x0.01']['robust_accuracy'])})", "clean >= 97%", "bart_accuracy.py"))

    qs = load("quickstart_bart.json")
    if qs:
        add(("README quick start: mnist-cnn-bart, FGSM/BIM/PGD-40 cascade at eps 0.3, 200 held-out, 8 draws: "
             "naive / eot8(bpda)", f"{pct(qs['naive_robust_accuracy_eps0.3'])} / "
             f"{pct(qs['adaptive_robust_accuracy_eps0.3'])} ({qs['seconds']:.0f} s)", "adaptive <= 5%",
             "quickstart_bart.py"))
    ad = load("adaptive_a.json")
    if ad and "bart" in ad:
        r = ad["bart"]
        eot = next(k for k in r if k.startswith("pgd40_eot"))
        add((f"mnist-cnn-bart PGD-40 0.3 ({r['n']} held-out, every step run): naive / bpda / {eot[6:]}",
             f"{pct(r['pgd40_naive']['accuracy'])} / {pct(r['pgd40_bpda']['accuracy'])} / {pct(r[eot]['accuracy'])}",
             "adaptive <= naive / 2", "adaptive.py --part a"))
    bc = load("bart_colour_k10.json")
    if bc:
        st = bc["settings"]
        for k, r in sorted(bc["runs"].items(), key=lambda kv: -int(kv[0])):
            ev = r["evaluation"]
            eot_key = next(key for key in ev["eps0.3"] if key.startswith("pgd20_eot"))
            cells = []
            for eps in sorted(st["eps"], reverse=True):
                row = ev[f"eps{eps:g}"]
                lo, hi = row[eot_key]["ci95"]
                cells.append(f"eps {eps:g}: {pct(row['fgsm_naive']['accuracy'])} / {pct(row['pgd20_naive']['accuracy'])}"
                             f" / {pct(row[eot_key]['accuracy'])} ({pct(lo)}-{pct(hi)})")
            add((f"BaRT k={k} on coloured MNIST (drawn from all 10 groups; mnist-cnn BaRT-trained from scratch at "
                 f"k={r.get('trained_k', k)}, {len(r.get('epochs', []))} epochs), {st['n']} held-out, "
                 f"{st['draws']} draws: clean; naive FGSM / "
                 f"naive PGD-20 / PGD-20 through eot{st['eot_n']}(bpda) (95% CI)",
                 f"{pct(ev['clean']['accuracy'])}; " + "; ".join(cells), "clean >= 80% to count",
                 f"bart_colour_k10.py --k {r.get('trained_k', k)}"
                 + (f" --deploy-k {k}" if str(r.get('trained_k', k)) != k else "")))
        add(("Lecture (BaRT): \"after 10 transforms, PGD and FGSM can't fool the network\"",
             f"{bc['verdict']}: {bc['why']}", "verdict by the demo's rule (claims.randomness_stops_attacks)", "bart_colour_k10.py"))
    ad = load("adaptive_b.json")
    if ad and "learned_bpda" in ad:
        for name, r in ad["learned_bpda"].items():
            cells = "; ".join(" / ".join(pct(r[f"pgd20_eps{e}_{k}"]["success_rate"])
                                         for k in ("identity", "builtin_surrogate", "learned")) for e in (0.1, 0.2))
            add((f"BPDA through {name} in front of mnist-cnn: PGD-20 success at eps 0.1; 0.2 with identity / built-in "
                 "surrogate / learned g (g's MAE vs identity's)",
                 f"{cells} (MAE {r['surrogate']['mae']:.4f} vs {r['surrogate']['mae_identity']:.4f})",
                 "reported", "adaptive.py"))

    t = load("transfer.json")
    if t:
        d = t["defense"]
        add(("HideProbabilities(mnist-cnn): naive PGD-40 0.3", pct(d["naive_pgd_on_hidden"]["robust_accuracy"]),
             "near clean", "transfer.py"))
        for r in t["substitute"]["by_lambda"]:
            ra = r["robust_accuracy_mean"]
            add((f"... substitute (6,400 label queries, lambda {r['config']['lam']}): FGSM / PGD transferred",
                 f"{pct(ra['fgsm'])} / {pct(ra['pgd'])}", "< 40%", "transfer.py"))
    for model, name, bar, cmd in (("mnist-cnn", "blackbox.json", "within 5 pp", "blackbox.py"),
                                  ("mnist-cnn-adv", "blackbox-mnist-cnn-adv.json", "reported",
                                   "blackbox.py --model mnist-cnn-adv")):
        bb = load(name)
        if not bb:
            continue
        s = bb["bar_a_square_vs_pgd"]
        add((f"Square 5,000 queries vs PGD-40, {model} eps 0.3", f"{pct(s['square']['robust_accuracy'])} vs "
             f"{pct(s['pgd']['robust_accuracy'])}", bar, cmd))
        h = bb.get("bar_b_hsj_vs_min_norm")
        if h:
            add(("HopSkipJump 5,000 queries: success / median L2 over min-norm PGD's",
                 f"{pct(h['hopskipjump']['success_rate'])} / {h['median_l2_ratio']:.2f}x", "100% / <= 1.5x", cmd))

    mn = load("min_norm.json")
    if mn:
        cw = mn.get("cw")
        if cw and isinstance(cw.get("foolbox"), dict):
            f = cw["foolbox"]
            st = cw["settings"]
            add((f"CW-L2 ({st['search_steps']} x {st['steps']} steps) on {st['n']} held-out, mnist-cnn: success / median "
                 "L2, bastion vs foolbox", f"{pct(f['bastion']['success_rate'])} / {f['bastion']['median']:.3f} vs "
                 f"{pct(f['foolbox']['success_rate'])} / {f['foolbox']['median']:.3f} (ratio "
                 f"{f['median_ratio_own_successes']:.3f})", "within 5%", "min_norm.py --part cw"))
            t = cw.get("torchattacks")
            if isinstance(t, dict):
                add((f"CW-L2 at one c={t['c']} ({st['steps']} steps): success / median L2, bastion vs torchattacks",
                     f"{pct(t['bastion']['success_rate'])} / {t['bastion']['median']:.3f} vs "
                     f"{pct(t['torchattacks']['success_rate'])} / {t['torchattacks']['median']:.3f}", "reported",
                     "min_norm.py --part cw"))
            art = cw.get("art")
            if isinstance(art, dict) and "speedup" in art:
                add((f"CW-L2 speed-up over ART CarliniL2Method ({art['n']} images, {art['search_steps']} x "
                     f"{art['steps']} steps; success bastion / ART)", f"{art['speedup']:.1f}x "
                     f"({pct(art['bastion']['success_rate'])} / {pct(art['art']['success_rate'])})", ">= 5x",
                     "min_norm.py --part cw"))
        df = mn.get("deepfool")
        if df:
            ta = df.get("torchattacks_l2")
            add((f"DeepFool L2 / Linf on mnist-cnn, {df['n']} held-out: success (median norm); torchattacks L2; "
                 "foolbox L2 / Linf",
                 f"{pct(df['bastion_l2']['success_rate'])} ({df['bastion_l2']['median']:.3f}) / "
                 f"{pct(df['bastion_linf']['success_rate'])} ({df['bastion_linf']['median']:.4f}); "
                 + (f"{pct(ta['success_rate'])} ({ta['median']:.3f}); " if isinstance(ta, dict) else "")
                 + f"{pct(df['foolbox_l2']['success_rate'])} ({df['foolbox_l2']['median']:.3f}) / "
                 f"{pct(df['foolbox_linf']['success_rate'])} ({df['foolbox_linf']['median']:.4f})",
                 "100%", "min_norm.py --part deepfool"))
        fm = mn.get("fmn")
        if fm:
            peer = "original" if isinstance(fm.get("l2", {}).get("original"), dict) else "foolbox"
            cells = []
            for norm in ("l0", "l1", "l2", "linf"):
                r = fm.get(norm)
                if r:
                    b, o = r["bastion"], r[peer]
                    cells.append(f"{norm} {pct(b['success_rate'])} / {b['median']:.3g} vs {pct(o['success_rate'])} / "
                                 f"{o['median']:.3g}")
            add((f"FMN ({fm['steps']} steps) on {fm['n']} held-out, mnist-cnn: success / median norm, bastion vs "
                 + ("the authors' code" if peer == "original" else "foolbox"), "; ".join(cells), "reported",
                 "min_norm.py --part fmn"))

    ev = load("mnist-cnn-adv-pgd50x10/results.json")
    if ev:
        add(("mnist-cnn-adv on 10,000 MNIST test: clean / PGD-50x10 (step 0.01) eps 0.3",
             f"{pct(ev['clean_accuracy'])} / " + ", ".join(pct(r["accuracy"]) for r in ev["rows"]), ">= 98.5% / >= 89%", "bastion evaluate"))
    tr = load("mnist-cnn-adv-training.json")
    if tr:
        add(("mnist-cnn-adv training time (PGD-5, 8 epochs, 2 cores; sum of epoch wall times)",
             f"{sum(e['seconds'] for e in tr['epochs']) / 60:.1f} min", "<= 30 min", "bastion train"))
    ta = load("transfer-mnist-cnn-adv.json")
    if ta:
        pt = ta["plain_transfer"]["mnist-cnn"]["attacks"]
        add(("mnist-cnn-adv: white-box PGD-40 vs PGD / FGSM transferred from mnist-cnn (1,000 held-out)",
             f"{pct(ta['defense']['white_box_pgd_on_target']['robust_accuracy'])} vs {pct(pt['pgd']['robust_accuracy'])}"
             f" / {pct(pt['fgsm']['robust_accuracy'])}", "reported", "transfer.py --target mnist-cnn-adv"))
    ft = load("mnist-cnn-fgsm-training.json")
    if ft:
        last = ft["epochs"][-1]
        add((f"mnist-cnn-fgsm (plain FGSM adversarial training, Goodfellow et al.; eps 0.3, {len(ft['epochs'])} epochs): "
             "validation clean / FGSM / PGD accuracy after the last epoch; label leaking flagged",
             f"{pct(last['val_clean_acc'])} / {pct(last['val_fgsm_acc'])} / {pct(last['val_robust_acc'])}; "
             f"{'yes' if any(e.get('label_leaking') for e in ft['epochs']) else 'no'}",
             "reported (the lecture: it only helps against FGSM)", "bastion train --defense adv --attack fgsm"))
    rb = load("regularization_baselines.json")
    if rb:
        for name, r in rb["results"].items():
            if isinstance(r, dict):
                add((f"{name}: clean / FGSM 0.3 / PGD-40 0.1, 0.3 (weight norm)",
                     f"{pct(r['clean'])} / {pct(r['fgsm_0.3'])} / {pct(r['pgd40_0.1'])}, {pct(r['pgd40_0.3'])} "
                     f"({r['weight_norm']:.1f})", "reported", "regularization_baselines.py"))
        for name, v in rb.get("verdicts", {}).items():
            best = max(v["by_attack"].items(), key=lambda kv: kv[1]["difference"])
            what = {"mnist-cnn-dropout": "dropout", "mnist-cnn-sgd-wd": "weight decay"}.get(name, name)
            add((f"the lecture: \"{what} does not help\" ({name} vs {v['baseline']}; "
                 "largest paired gain, weight norm ratio)",
                 f"{v['claim']}: {best[0]} {best[1]['difference'] * 100:+.1f} pp "
                 f"(+/- {best[1]['ci95_half_width'] * 100:.1f}); x{v['weight_norm_ratio']:.2f}",
                 "verdict from the numbers", "regularization_baselines.py"))
    for recipe in ("fgsm-rs", "pgd", "trades"):
        at = load(f"adv_training_{recipe}.json")
        if at:
            best = max(at["curve"], key=lambda c: c["pgd20_accuracy"])
            cpu = best.get("train_cpu_seconds")
            add((f"adversarial training {recipe} from scratch, {len(at['curve'])} epochs: best PGD-20 accuracy "
                 "(epoch; training time)",
                 f"{pct(best['pgd20_accuracy'])} (epoch {best['epoch']}; {best['train_seconds'] / 60:.0f} min wall"
                 + (f", {cpu / 60:.0f} min CPU on {at.get('torch_threads', '?')} thread(s)" if cpu else "") + ")",
                 "reported", f"adv_training.py --recipe {recipe}"))

    w = load("web_latency.json")
    if w:
        add(("web demo: FGSM request, median (HTTP)", f"{w['http_fgsm']['threads=1']['median_ms']:.0f} ms", "< 300 ms",
             "web_latency.py"))
    di = load("distributed.json")
    if di and "speedup_2_over_1" in di:
        add(("evaluation, 2 processes over 1 (torchrun, gloo)", f"{di['speedup_2_over_1']:.2f}x", "reported", "distributed.py"))
    de = load("demo_time.json")
    if de and "idle_runs" in de:
        idle = ", ".join(f"{r['wall_seconds']:.0f}" for r in de["idle_runs"])
        busy = ", ".join(f"{r['wall_seconds']:.0f}" for r in de["busy_runs"])
        add(("`bastion demo` wall time: idle (median of runs); beside one CPU-bound process",
             f"{de['idle_median_seconds']:.0f} s ({idle}); {de['busy_median_seconds']:.0f} s ({busy}), "
             f"{de['busy_over_idle']:.2f}x"
             + (f" (a fixed PGD workload on the same machine: {de['floor']['busy_over_idle']:.2f}x)"
                if de.get("floor", {}).get("busy_over_idle") else "")
             + (f"; commit {de['commit']}" if de.get("commit") else ""),
             "<= 180 s; <= 2.5x (or the machine's own ratio)", "demo_time.py"))
    return out


def main() -> None:
    print("| measurement | measured | bar | command (`benchmarks/`) |")
    print("|---|---|---|---|")
    for what, value, bar, cmd in rows():
        print(f"| {what} | {value} | {bar} | `{cmd}` |")


if __name__ == "__main__":
    main()
