"""Example panels for reports: attack triptychs and Grad-CAM of clean vs adversarial inputs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bastion._wrap import innermost
from bastion.attacks.base import Attack, AttackResult
from bastion.data import LabelledImages
from bastion.errors import BastionError
from bastion.viz.cam import grad_cam, upsample
from bastion.viz.figures import cam_panel, triptych
from bastion.viz.html import esc, img, paragraph


def is_label_only(scores: Tensor) -> bool:
    """Whether a model's outputs are one-hot (it returns only its label): no confidence to show."""
    return bool(((scores == 0) | (scores == 1)).all() and (scores.sum(1) == 1).all())


def pick_examples(success: Tensor, k: int) -> Tensor:
    """Up to ``k`` indices, about half where the attack succeeded and half where it failed (each kind in order,
    the other kind filling in when one is short)."""
    hit, miss = success.nonzero().squeeze(1), (~success).nonzero().squeeze(1)
    n_hit = min(hit.numel(), max(k - miss.numel(), (k + 1) // 2))
    return torch.cat([hit[:n_hit], miss[: k - n_hit]])


def captions(res: AttackResult, classes: Sequence[str], *, label_only: bool) -> tuple[list[str], list[str]] | None:
    """What each panel says under its prediction: the share of draws on a randomized model, nothing on a
    label-only one (its scores are not confidences); None keeps the softmax confidence."""
    if res.draws > 1 and res.preds_adv is not None and res.preds_clean is not None:
        def shares(preds: Tensor) -> list[str]:
            top = preds.mode(0).values
            return [f"{classes[int(t)]}\n{int((preds[:, i] == t).sum())}/{preds.shape[0]} draws"
                    for i, t in enumerate(top)]
        return shares(res.preds_clean), shares(res.preds_adv)
    if label_only:
        return ([f"{classes[int(c)]}\n(label only)" for c in res.pred_clean],
                [f"{classes[int(c)]}\n(label only)" for c in res.pred_adv])
    return None


def example_blocks(model: nn.Module, data: LabelledImages, attack: Attack, *, k: int = 4,
                   device: str | torch.device = "cpu", seed: int = 0, pool: int = 16) -> list[str]:
    """HTML blocks: a triptych of ``k`` images attacked by ``attack``, chosen among the first ``pool`` to show
    both successes and failures (labelled), and Grad-CAM panels when the classifier is a conv net."""
    sample = data.take(max(k, pool)).load()  # image files: only these are decoded
    if sample.images.ndim != 4:
        return []
    x, y = sample.images.to(device), sample.labels.to(device)
    res = attack(model, x, y, generator=torch.Generator().manual_seed(seed),
                 keys=sample.indices.to(device) if sample.indices is not None else None)
    chosen = pick_examples(res.success.cpu(), k).to(device)
    res = res.select(chosen)
    x, y = x[chosen], y[chosen]
    classes = getattr(model, "classes", tuple(str(i) for i in range(res.logits_adv.shape[1])))
    label = esc(f"{attack.name} " + ", ".join(f"{k_}={v}" for k_, v in attack.to_dict().items() if k_ in ("eps", "steps")))
    broke = int(res.success.sum())
    titles = [("fooled" if bool(s) else "held") for s in res.success]
    how = (f"{len(chosen)} of the first {len(sample)} images: {broke} the attack fooled and {len(chosen) - broke} it "
           "did not (labelled on the left; a red prediction is a wrong one)")
    if res.draws > 1:
        how += (f". The model is randomized: each prediction is the class most of {res.draws} fresh draws give, "
                "with how many of them give it")
    blocks = [f"<h3>Examples: original | perturbation | adversarial ({label})</h3>", paragraph(how + ".", "note"),
              img(triptych(x.cpu(), res.x_adv.cpu(), res.logits_clean.cpu(), res.logits_adv.cpu(), classes, y=y.cpu(),
                           titles=titles, captions=captions(res, classes, label_only=is_label_only(res.logits_clean))),
                  "attack examples")]
    net = innermost(model)  # the classifier inside any defenses and adaptive wrappers
    try:
        size = (x.shape[2], x.shape[3])
        raw = {
            "clean, true class": upsample(grad_cam(net, x, class_idx=y), size, normalize=False),
            "adv, true class": upsample(grad_cam(net, res.x_adv, class_idx=y), size, normalize=False),
            "adv, adversarial class": upsample(grad_cam(net, res.x_adv, class_idx=res.pred_adv), size, normalize=False),
        }
    except BastionError as e:
        return blocks + [paragraph(f"No Grad-CAM: {e}", "note")]
    # one scale per example across its three maps (Grad-CAM is >= 0): a true-class map that fades under
    # attack is drawn fainter, not stretched back to full strength
    top = torch.stack(list(raw.values())).amax(dim=(0, 2, 3)).clamp_min(1e-12)[:, None, None]
    maps = {t: (m / top).clamp(0.0, 1.0) for t, m in raw.items()}
    titles = [f"{classes[int(a)]} -> {classes[int(b)]}" for a, b in zip(y, res.pred_adv, strict=True)]
    blocks += ["<h3>Grad-CAM: where the classifier looks, clean vs adversarial</h3>",
               img(cam_panel(x.cpu(), res.x_adv.cpu(), {t: m.cpu() for t, m in maps.items()}, row_titles=titles), "grad-cam")]
    return blocks
