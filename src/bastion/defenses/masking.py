"""Output masking: the "hide the probabilities" defense, included to show that it fails.

Returning only the top class (one-hot scores) removes the gradient signal gradient attacks need: the
output is piecewise constant in the input, so its gradient is zero almost everywhere and PGD/FGSM stop
working. But the decision boundary has not moved: transfer attacks from a substitute model, and
label-only attacks (HopSkipJump), break it as easily as the undefended model. See Papernot et al. 2017
and Carlini et al. 2019, "On Evaluating Adversarial Robustness", section 4.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from bastion._wrap import ModelWrapper


class HideProbabilities(ModelWrapper):
    """Wrap ``model`` so it outputs one-hot scores of its most likely class (a label-only model).

    The output is returned as scores in {0, 1} (usable as "logits": ``argmax`` gives the label). It stays
    attached to the graph (as ``onehot + 0 * logits``) so that autograd runs, but its gradient with respect to
    the input is exactly zero: what a gradient attack sees.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.adopt_mode(model)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.model(x)
        onehot = F.one_hot(logits.argmax(1), logits.shape[1]).to(logits.dtype)
        # Keep the graph connected (zero gradient) so attacks see "no signal", not an autograd error.
        return onehot + 0.0 * logits

    def to_dict(self) -> dict[str, Any]:
        return {"defense": "HideProbabilities"}

    def defense_info(self) -> dict[str, Any]:
        return self.to_dict()
