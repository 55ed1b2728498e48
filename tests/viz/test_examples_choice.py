"""The report's example panels: chosen to show successes and failures, captions that say what the numbers are."""

from __future__ import annotations

import torch

from bastion.attacks import FGSM
from bastion.data import load_dataset
from bastion.defenses import HideProbabilities
from bastion.models import pretrained
from bastion.viz.examples import captions, example_blocks, is_label_only, pick_examples


def test_examples_mix_successes_and_failures():
    success = torch.tensor([True, True, True, True, False, True, False, True])
    chosen = pick_examples(success, 4)
    assert chosen.tolist() == [0, 1, 4, 6]
    assert pick_examples(torch.ones(6, dtype=torch.bool), 4).tolist() == [0, 1, 2, 3]
    assert pick_examples(torch.tensor([False, False, True]), 4).tolist() == [2, 0, 1]


def test_label_only_models_get_no_confidence_and_the_report_says_how_many_were_fooled():
    data = load_dataset("mnist-5k", "test").spread(16)
    model = HideProbabilities(pretrained("mnist-cnn"))
    res = FGSM(eps=0.2)(model, data.images[:4], data.labels[:4])
    assert is_label_only(res.logits_clean)
    clean, adv = captions(res, [str(i) for i in range(10)], label_only=True)
    assert all("%" not in c for c in clean + adv)
    assert not is_label_only(pretrained("mnist-cnn")(data.images[:4]))
    html = "".join(example_blocks(pretrained("mnist-cnn"), data, FGSM(eps=0.2), k=4))
    assert "of the first 16 images" in html and "the attack fooled" in html


def test_randomized_model_captions_count_the_draws():
    data = load_dataset("mnist-5k", "test").spread(4)
    res = FGSM(eps=0.1)(pretrained("mnist-cnn-bart"), data.images, data.labels)
    assert res.draws > 1
    clean, adv = captions(res, [str(i) for i in range(10)], label_only=False)
    assert all(c.endswith(f"/{res.draws} draws") for c in clean + adv)
