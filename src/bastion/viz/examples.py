"""Example panels for reports: attack triptychs and Grad-CAM of clean vs adversarial inputs."""

from __future__ import annotations

import torch
from torch import nn

from bastion._wrap import innermost
from bastion.attacks.base import Attack
from bastion.data import LabelledImages
from bastion.errors import BastionError
from bastion.viz.cam import grad_cam, upsample
from bastion.viz.figures import cam_panel, triptych
from bastion.viz.html import esc, img, paragraph


def classifier_of(model: nn.Module) -> nn.Module:
    """The innermost classifier of a stack of wrappers (defenses, adaptive transforms)."""
    return innermost(model)


def example_blocks(model: nn.Module, data: LabelledImages, attack: Attack, *, k: int = 4,
                   device: str | torch.device = "cpu", seed: int = 0) -> list[str]:
    """HTML blocks: a triptych of ``k`` images attacked by ``attack``, and Grad-CAM panels when the classifier
    is a conv net."""
    sample = data.take(k).load()  # image files: only these k are decoded
    if sample.images.ndim != 4:
        return []
    x, y = sample.images[:k].to(device), sample.labels[:k].to(device)
    res = attack(model, x, y, generator=torch.Generator().manual_seed(seed),
                 keys=sample.indices[:k].to(device) if sample.indices is not None else None)
    classes = getattr(model, "classes", tuple(str(i) for i in range(res.logits_adv.shape[1])))
    label = esc(f"{attack.name} " + ", ".join(f"{k_}={v}" for k_, v in attack.to_dict().items() if k_ in ("eps", "steps")))
    blocks = [f"<h3>Examples: original | perturbation (magnified) | adversarial ({label})</h3>",
              img(triptych(x.cpu(), res.x_adv.cpu(), res.logits_clean.cpu(), res.logits_adv.cpu(), classes, y=y.cpu()),
                  "attack examples")]
    net = classifier_of(model)
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
