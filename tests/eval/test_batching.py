"""The evaluation's memory bound: images per attack call (``batch_size``, by default fewer for large inputs),
chunked passes inside the attacks and the sanity checks; results do not depend on either."""

import dataclasses

import pytest
import torch

from bastion import _model
from bastion.attacks import FGSM, JSMA, PGD
from bastion.data.base import ImageDataset
from bastion.errors import ConfigError
from bastion.eval import Evaluation
from bastion.eval.checks import check_eot_baseline, check_gradients, check_unbounded
from tests.conftest import tiny_cnn


def rgb_data(n: int, size: int = 8, seed: int = 0) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    return ImageDataset(name="synthetic-rgb", split="test", images=torch.rand(n, 3, size, size, generator=g),
                        labels=torch.randint(0, 10, (n,), generator=g), classes=tuple(str(i) for i in range(10)))


def test_default_batch_holds_fewer_large_images():
    ev = Evaluation(suite=[FGSM(eps=0.1)])
    assert ev.batch_size is None
    assert ev.batch_for(rgb_data(2, size=224)) == 55  # 8.4 million values
    assert ev.batch_for(rgb_data(2, size=32)) == 256
    assert Evaluation(suite=[FGSM(eps=0.1)], batch_size=7).batch_for(rgb_data(2, size=224)) == 7
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match="batch_size"):
            Evaluation(suite=[FGSM(eps=0.1)], batch_size=bad)


def test_attack_calls_follow_the_batch_size(monkeypatch):
    model = tiny_cnn(seed=1, input_shape=(3, 8, 8))
    data = rgb_data(11)
    seen = []
    hook = model.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].shape[0]))
    try:
        Evaluation(suite=[FGSM(eps=0.1)], batch_size=4, cascade=False, checks=False).run(model, data)
    finally:
        hook.remove()
    assert max(seen) <= 8 and 4 in seen  # probes of 8 images; attack calls of 4, 4, 3
    assert 3 in seen


def test_report_does_not_depend_on_batch_size_or_chunks(monkeypatch):
    model = tiny_cnn(seed=2, input_shape=(3, 8, 8))
    data = rgb_data(13, seed=1)
    suite = [FGSM(eps=0.1), PGD(eps=0.1, steps=3), JSMA(max_features=6, per_step=2)]

    def run(batch_size):
        return Evaluation(suite=suite, eps_grid=[0.05, 0.2], batch_size=batch_size, check_images=13).run(model, data)

    one = run(None)
    monkeypatch.setattr(_model, "GRAD_CHUNK_FEATURES", 3 * 64 * 2)
    monkeypatch.setattr(_model, "_CPU_CHUNK_FEATURES", 3 * 64 * 3)
    small = run(5)
    assert one.clean_accuracy == small.clean_accuracy
    for a, b in zip(one.rows, small.rows, strict=True):
        assert (a.attack, a.eps, a.accuracy, a.succeeded) == (b.attack, b.eps, b.accuracy, b.succeeded)
        assert a.l0_max == b.l0_max
    assert [f.code for f in one.flags] == [f.code for f in small.flags]
    assert one.per_image["rows"].keys() == small.per_image["rows"].keys()
    for key, row in one.per_image["rows"].items():
        assert row["robust"] == small.per_image["rows"][key]["robust"]


def test_checks_in_batches_and_chunks_equal_one_pass(monkeypatch):
    model = tiny_cnn(seed=3, input_shape=(3, 8, 8))
    data = rgb_data(10, seed=2)
    with torch.no_grad():
        data = dataclasses.replace(data, labels=model(data.images).argmax(1))  # every image correct
    # thresholds that always fire, so that the evidence (the accuracies found) can be compared
    weak = check_unbounded(model, data, device="cpu", threshold=-1.0)
    report = Evaluation(suite=[PGD(eps=0.1, steps=2)], eps_grid=[0.1], checks=False).run(model, data)
    rows = [dataclasses.replace(r, accuracy=1.0) for r in report.rows]  # pretend the attacks did nothing
    eot = check_eot_baseline(model, data, rows, device="cpu", draws=1, steps=5, samples=3)
    grads = check_gradients(model, data, device="cpu", threshold=-1.0)
    monkeypatch.setattr(_model, "GRAD_CHUNK_FEATURES", 3 * 64 * 4)
    weak_b = check_unbounded(model, data, device="cpu", threshold=-1.0, batch_size=3)
    eot_b = check_eot_baseline(model, data, rows, device="cpu", draws=1, steps=5, samples=3)
    grads_b = check_gradients(model, data, device="cpu", threshold=-1.0)
    assert weak and weak_b and weak[0].evidence == weak_b[0].evidence
    assert eot and eot_b and eot[0].evidence == eot_b[0].evidence
    assert grads and grads_b and grads[0].evidence == grads_b[0].evidence
