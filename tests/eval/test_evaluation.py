import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from bastion.attacks import BIM, FGSM, PGD
from bastion.data import load_dataset
from bastion.defenses import HideProbabilities
from bastion.errors import ConfigError, ModelModeError
from bastion.eval import Evaluation, RobustnessReport
from bastion.models import pretrained


@pytest.fixture(scope="module")
def data():
    return load_dataset("mnist-5k", "test").subset(torch.arange(0, 1000, 25))  # 40 images, 4 per class


@pytest.fixture(scope="module")
def cnn():
    return pretrained("mnist-cnn")


SUITE = [FGSM(eps=0.3), BIM(eps=0.3, steps=10), PGD(eps=0.3, steps=20, step_size=0.03)]


@pytest.fixture(scope="module")
def report(cnn, data):
    return Evaluation(suite=SUITE, eps_grid=[0.1, 0.3], cascade=True, batch_size=16).run(cnn, data)


class RandomizedStandIn(nn.Module):
    """A randomized-input defense stand-in: Gaussian noise before the classifier, from its own generator."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.g = torch.Generator().manual_seed(0)
        self.training = False

    def forward(self, x):
        noise = torch.randn(x.shape, generator=self.g) * 0.3
        return self.model((x + noise).clamp(0, 1))


def test_rows_and_cascade(report, data):
    assert [r.attack for r in report.rows] == ["fgsm", "bim", "pgd", "fgsm", "bim", "pgd"]
    accs = {(r.attack, r.eps): r.accuracy for r in report.rows}
    # cascade: accuracy after each attack is the worst case so far, hence non-increasing along the suite
    for eps in (0.1, 0.3):
        assert accs[("fgsm", eps)] >= accs[("bim", eps)] >= accs[("pgd", eps)]
    assert accs[("pgd", 0.3)] <= 0.05
    worst = {w["eps"]: w["accuracy"] for w in report.worst_case}
    assert worst[0.3] == accs[("pgd", 0.3)]
    per = report.per_image
    assert len(per["index"]) == len(data) and per["index"] == data.indices.tolist()
    assert set(per["clean"]) <= {0.0, 1.0}  # a deterministic model: one draw, shares of 0 or 1
    row = next(r for r in report.rows if r.attack == "pgd" and r.eps == 0.3)
    assert row.attacked < len(data)  # cascade: PGD only ran on points FGSM and BIM left robust
    assert row.linf_max is None or row.linf_max <= 0.3 + 1e-6


def test_non_cascade_rows_are_standalone(cnn, data):
    rep = Evaluation(suite=SUITE[:1], eps_grid=[0.1, 0.2], cascade=False).run(cnn, data)
    assert all(r.attacked == len(data) for r in rep.rows)
    r = FGSM(eps=0.2)(cnn, data.images, data.labels)
    assert rep.rows[1].accuracy == pytest.approx(float(r.robust.float().mean()))


def test_schema_round_trip_json_and_csv(report):
    text = report.to_json()
    back = RobustnessReport.from_json(text)
    assert back.to_json() == text
    d = json.loads(text)
    assert d["schema_version"] == 2 and d["rows"][0]["attack"] == "fgsm"
    assert d["draws"] == 1 and d["randomized"] is False
    csv = report.to_csv().splitlines()
    assert csv[0].startswith("attack,mode,access,eps,accuracy") and len(csv) == 1 + len(report.rows)
    d["schema_version"] = 99
    with pytest.raises(ValueError, match="schema_version"):
        RobustnessReport.from_dict(d)


def test_checks_quiet_on_plain_cnn(report):
    assert report.flags == []


def test_checks_fire_on_label_only_model(cnn, data):
    rep = Evaluation(suite=SUITE, eps_grid=[0.3], batch_size=40).run(HideProbabilities(cnn), data)
    codes = {f.code for f in rep.flags}
    assert {"onehot-outputs", "zero-gradients", "unbounded-attack-fails", "loss-not-increasing"} <= codes
    for f in rep.flags:
        assert f.meaning and f.advice


def test_checks_fire_on_randomized_model_without_eot(cnn, data):
    rep = Evaluation(suite=[PGD(eps=0.3, steps=5)], eps_grid=[0.3]).run(RandomizedStandIn(cnn), data)
    assert "randomized-outputs" in {f.code for f in rep.flags}


def test_single_step_beating_iterative_and_non_monotone_fire():
    from bastion.eval.checks import check_rows
    from bastion.eval.report import Row

    def row(attack, eps, acc):
        return Row(attack=attack, mode="naive", access="white-box", eps=eps, accuracy=acc, success_rate=0, attacked=100,
                   succeeded=0, l0_mean=None, l0_max=None, l2_mean=None, l2_max=None, linf_mean=None, linf_max=None,
                   seconds=0, queries_mean=0, loss_clean=0.1, loss_adv=1.0)

    flags = check_rows([row("fgsm", 0.3, 0.2), row("pgd", 0.1, 0.3), row("pgd", 0.3, 0.6)], n=1000)
    codes = {f.code for f in flags}
    assert "single-step-beats-iterative" in codes and "non-monotone-eps" in codes
    assert check_rows([row("fgsm", 0.3, 0.3), row("pgd", 0.1, 0.5), row("pgd", 0.3, 0.1)], n=1000) == []


def test_adaptive_rows_side_by_side(cnn, data):
    rep = Evaluation(suite=[PGD(eps=0.3, steps=5)], eps_grid=[0.3], adaptive={"same": cnn}, checks=False).run(cnn, data.take(8))
    assert rep.modes() == ["naive", "adaptive:same"]


def test_bad_configuration_and_training_mode(cnn, data):
    with pytest.raises(ConfigError):
        Evaluation(suite=[])
    with pytest.raises(ConfigError):
        Evaluation(suite=SUITE, eps_grid=[-0.1])
    cnn.train()
    try:
        with pytest.raises(ModelModeError):
            Evaluation(suite=SUITE, eps_grid=[0.1]).run(cnn, data)
    finally:
        cnn.eval()


def test_checks_fire_on_the_real_bart_model_under_naive_attacks_only(data):
    """The shipped BaRT model is randomized: a naive evaluation is flagged; with EOT in the suite it is not."""
    from bastion.attacks import bpda, eot

    bart = pretrained("mnist-cnn-bart")
    small = data.take(16)
    naive = Evaluation(suite=[PGD(eps=0.3, steps=3)], eps_grid=[0.3]).run(bart, small)
    assert "randomized-outputs" in {f.code for f in naive.flags}
    adaptive = Evaluation(suite=[PGD(eps=0.3, steps=3)], eps_grid=[0.3],
                          adaptive={"eot(bpda)": eot(bpda(bart), n=2)}).run(bart, small)
    assert "randomized-outputs" not in {f.code for f in adaptive.flags}


def test_loss_not_increasing_is_relative():
    """A robust model's loss rises little at small eps; only a flat or falling loss is flagged."""
    from bastion.eval.checks import check_rows
    from bastion.eval.report import Row

    def row(clean, adv):
        return Row(attack="pgd", mode="naive", access="white-box", eps=0.05, accuracy=0.99, success_rate=0.0,
                   attacked=200, succeeded=0, l0_mean=None, l0_max=None, l2_mean=None, l2_max=None, linf_mean=None,
                   linf_max=None, seconds=0, queries_mean=0, loss_clean=clean, loss_adv=adv)

    def codes(r):
        return {f.code for f in check_rows([r], n=200)}

    assert "loss-not-increasing" not in codes(row(0.0161, 0.0167))  # mnist-cnn-adv in the demo: a working attack
    assert "loss-not-increasing" in codes(row(0.0161, 0.0161))
    assert "loss-not-increasing" in codes(row(0.5, 0.4))


def test_suite_entries_sharing_a_name_get_their_own_rows(cnn, data):
    """Two PGDs used to share the key 'naive/pgd@0.15': the second overwrote the first, and the worst case
    was the weaker attack's."""
    strong, weak = PGD(eps=0.15, steps=20), PGD(eps=0.15, steps=2)
    alone = Evaluation(suite=[strong], checks=False).run(cnn, data).rows[0].accuracy
    rep = Evaluation(suite=[strong, weak], checks=False, cascade=False).run(cnn, data)
    assert [r.attack for r in rep.rows] == ["pgd(steps=20)", "pgd(steps=2)"]
    assert rep.rows[0].accuracy == alone
    assert rep.rows[1].accuracy > rep.rows[0].accuracy  # two steps are weaker: the rows differ
    assert rep.worst_case[0]["accuracy"] <= alone
    swept = Evaluation(suite=[PGD(eps=0.1, steps=3), PGD(eps=0.2, steps=3)], eps_grid=[0.1], checks=False)
    assert [r.attack for r in swept.run(cnn, data.take(8)).rows] == ["pgd#1", "pgd#2"]


def test_transfer_attack_is_swept_and_counts_in_the_worst_case(cnn, data):
    from bastion.attacks import TransferAttack

    hidden = HideProbabilities(cnn)
    tr = TransferAttack(source=pretrained("mnist-cnn-gap"), attack=PGD(eps=0.3, steps=10, early_stop=False))
    rep = Evaluation(suite=[PGD(eps=0.3, steps=10), tr], eps_grid=[0.1, 0.3]).run(hidden, data)
    rows = {(r.attack, r.eps): r.accuracy for r in rep.rows}
    assert set(rows) == {("pgd", 0.1), ("transfer", 0.1), ("pgd", 0.3), ("transfer", 0.3)}
    assert rows[("transfer", 0.3)] < rows[("transfer", 0.1)]  # the radius reached the inner attack
    worst = {w["eps"]: w["accuracy"] for w in rep.worst_case}
    assert worst[0.3] <= rows[("transfer", 0.3)] < 0.8
    assert "blackbox-beats-whitebox" in {f.code for f in rep.flags}


def test_same_evaluation_twice_gives_the_same_numbers_on_a_randomized_model(data):
    bart = pretrained("mnist-cnn-bart")
    state = bart.generator.get_state()
    ev = Evaluation(suite=[FGSM(eps=0.2), PGD(eps=0.2, steps=3)], checks=False, seed=3)
    a, b = ev.run(bart, data.take(24)), ev.run(bart, data.take(24))
    assert [v["robust"] for v in a.per_image["rows"].values()] == [v["robust"] for v in b.per_image["rows"].values()]
    assert torch.equal(bart.generator.get_state(), state)  # the model's own generator is left as it was


def test_evaluation_under_no_grad_and_inference_mode(cnn, data):
    """Gradient attacks used to find a zero gradient under no_grad() (accuracy unchanged), and the checks crashed."""
    small = data.take(16)
    ev = Evaluation(suite=[PGD(eps=0.3, steps=10)], checks=True, check_images=8)
    with torch.no_grad():
        rep = ev.run(cnn, small)
    with torch.inference_mode():
        rep2 = ev.run(cnn, small)
    assert rep.rows[0].accuracy < 0.2 and rep2.rows[0].accuracy == rep.rows[0].accuracy
    with pytest.raises(ConfigError, match="empty"):
        ev.run(cnn, small.subset([]))
    with pytest.raises(ConfigError, match="batch_size"):
        Evaluation(suite=[FGSM(eps=0.1)], batch_size=2.5)


def test_norms_are_separate_threat_models(cnn, data):
    """An L2 row never inherits Linf breaks in the cascade, and worst cases and checks stay within one norm."""
    small = data.take(24)
    suite = [FGSM(eps=0.3), PGD(eps=0.5, steps=5, norm="l2")]
    rep = Evaluation(suite=suite, eps_grid=[0.3], cascade=True).run(cnn, small)
    alone = Evaluation(suite=[suite[1]], eps_grid=[0.3], cascade=True).run(cnn, small)
    rows = {r.attack: r for r in rep.rows}
    assert rows["pgd-l2"].norm == "l2" and rows["fgsm"].norm == "linf"
    assert rows["pgd-l2"].accuracy == alone.rows[0].accuracy > rows["fgsm"].accuracy  # its own, not FGSM's
    assert {(w["norm"], w["eps"]) for w in rep.worst_case} == {("linf", 0.3), ("l2", 0.3)}
    assert not {"single-step-beats-iterative", "blackbox-beats-whitebox"} & {f.code for f in rep.flags}


def test_standalone_accuracy_counts_only_images_the_model_gets_right():
    from bastion.eval import PerImage

    ev = Evaluation(suite=[FGSM(eps=0.1)], cascade=False, checks=False)
    per = PerImage.from_dict({
        "index": [0, 1, 2, 3], "clean": [1, 1, 0, 0], "loss_clean": [0.1] * 4, "order": ["naive/fgsm@0.1"],
        "rows": {"naive/fgsm@0.1": {"attack": "fgsm", "mode": "naive", "access": "white-box", "eps": 0.1,
                                    "norm": "linf", "robust": [1, 0, 1, 1], "l0": [None, 3, None, None],
                                    "l2": [None, 1.0, None, None], "linf": [None, 0.1, None, None],
                                    "queries": [1] * 4, "loss_adv": [0.2] * 4, "seconds": 0.0}}})
    _, rows, worst = ev.aggregate(per)
    assert rows[0].accuracy == 0.25 == worst[0]["accuracy"]  # image 0 only: 2 and 3 were wrong from the start


def test_shares_of_a_randomized_model_average_and_cascade_by_their_minimum():
    """Per image, the share of correct draws: accuracy is the mean share, the cascade keeps attacking an image
    until no draw is correct, and its worst case is the lowest share any attack left."""
    from bastion.eval import PerImage

    def row(attack, robust):
        return {"attack": attack, "mode": "naive", "access": "white-box", "eps": 0.3, "norm": "linf",
                "robust": robust, "l0": [None] * 3, "l2": [None] * 3, "linf": [None] * 3, "queries": [1] * 3,
                "loss_adv": [0.2 if v is not None else None for v in robust], "seconds": 0.0}

    per = PerImage.from_dict({
        "index": [0, 1, 2], "clean": [1.0, 0.75, 0.0], "loss_clean": [0.1] * 3, "draws": 8,
        "order": ["naive/fgsm@0.3", "naive/pgd@0.3"],
        "rows": {"naive/fgsm@0.3": row("fgsm", [0.5, 0.25, None]), "naive/pgd@0.3": row("pgd", [0.625, 0.125, None])}})
    clean, rows, worst = Evaluation(suite=[FGSM(eps=0.3), PGD(eps=0.3)], cascade=True).aggregate(per)
    assert clean == pytest.approx(1.75 / 3)
    assert rows[0].accuracy == pytest.approx(0.75 / 3) and rows[1].accuracy == pytest.approx(0.625 / 3)
    assert worst[0]["accuracy"] == pytest.approx(0.625 / 3)
    assert rows[0].succeeded == 1 and rows[1].succeeded == 1  # image 1: fewer than half of the draws correct


def test_cascade_checks_see_a_weaker_attack_that_runs_after_a_stronger_one(cnn, data):
    from bastion.eval.checks import check_rows
    from bastion.eval.report import Row

    def row(attack, acc, succeeded, access="white-box"):
        return Row(attack=attack, mode="naive", access=access, eps=0.3, accuracy=acc, success_rate=0, attacked=100,
                   succeeded=succeeded, l0_mean=None, l0_max=None, l2_mean=None, l2_max=None, linf_mean=None,
                   linf_max=None, seconds=0, queries_mean=0, loss_clean=0.1, loss_adv=1.0, norm="linf")

    # cascade accuracies are worst cases so far: the old comparison could never fire on them
    stuck = [row("pgd", 0.6, 40), row("fgsm", 0.2, 400)]
    assert "single-step-beats-iterative" in {f.code for f in check_rows(stuck, n=1000, cascade=True)}
    healthy = [row("pgd", 0.2, 800), row("fgsm", 0.2, 0), row("square", 0.199, 1, access="score")]
    assert check_rows(healthy, n=1000, cascade=True) == []
    masked = [row("pgd", 0.9, 100), row("square", 0.3, 600, access="score")]
    assert "blackbox-beats-whitebox" in {f.code for f in check_rows(masked, n=1000, cascade=True)}
    # end to end: a crippled PGD (one step of 0.001) before FGSM, in the default cascade
    weak = PGD(eps=0.3, steps=1, step_size=0.001, random_start=False)
    rep = Evaluation(suite=[weak, FGSM(eps=0.3)], cascade=True).run(cnn, data.take(24))
    assert "single-step-beats-iterative" in {f.code for f in rep.flags}


def test_eps_grid_takes_numpy_and_refuses_repeats(cnn, data):
    import numpy as np

    rep = Evaluation(suite=[FGSM(eps=0.1)], eps_grid=np.array([0.1, 0.2]), checks=False).run(cnn, data.take(4))
    assert [r.eps for r in rep.rows] == [0.1, 0.2] and isinstance(rep.rows[0].eps, float)
    with pytest.raises(ConfigError, match="repeated"):
        Evaluation(suite=[FGSM(eps=0.1)], eps_grid=[0.1, 0.3, 0.1])


def test_attacks_without_radius_have_no_curve_point(cnn, data):
    from bastion.attacks import JSMA

    rep = Evaluation(suite=[FGSM(eps=0.1), JSMA(gamma=0.02)], eps_grid=[0.1], checks=False).run(cnn, data.take(4))
    assert rep.curve("jsma") == [] and rep.worst() == [(0.1, rep.worst_case[0]["accuracy"])]


def test_model_level_checks_use_the_adaptive_models(cnn, data):
    from bastion.eval.checks import run_checks

    hidden = HideProbabilities(cnn)  # zero gradients: naive PGD fails; crafting on the logits model does not
    small = data.take(16)
    naive = {f.code: f.severity for f in run_checks(hidden, small, [], device="cpu")}
    assert naive["zero-gradients"] == "error" and "unbounded-attack-fails" in naive
    with torch.no_grad():  # autograd is turned on inside
        adaptive = {f.code: f.severity for f in run_checks(hidden, small, [], adaptive={"logits": cnn})}
    assert adaptive["zero-gradients"] == "warning" and "unbounded-attack-fails" not in adaptive


@given(seed=st.integers(0, 2**20), cascade_eps=st.sampled_from([[0.05, 0.2], [0.1], [0.3]]))
@settings(max_examples=8, deadline=None)
def test_cascade_equals_every_attack_on_every_image(seed, cascade_eps):
    """On a deterministic model, the cascade (each attack only on the images still standing) gives, per image and
    overall, the worst case of running every attack on every image: an attack's result for an image does not
    depend on the other images of its batch."""
    from bastion.data.base import ImageDataset
    from bastion.eval import PerImage, worst_case
    from tests.conftest import tiny_cnn

    g = torch.Generator().manual_seed(seed)
    model = tiny_cnn(seed=seed % 7)
    x = torch.rand(24, 1, 8, 8, generator=g)
    y = model(x).argmax(1).detach()
    y[::5] = (y[::5] + 1) % 10  # a few images the model gets wrong from the start
    data = ImageDataset(name="random", split="all", images=x, labels=y, classes=tuple(map(str, range(10))),
                        indices=torch.arange(24))
    suite = [FGSM(eps=0.3), BIM(eps=0.3, steps=3), PGD(eps=0.3, steps=3, restarts=2)]
    runs = {c: Evaluation(suite=suite, eps_grid=cascade_eps, cascade=c, checks=False, batch_size=7, seed=seed)
            .run(model, data) for c in (True, False)}
    cas, full = (PerImage.from_dict(runs[c].per_image) for c in (True, False))
    for eps in cascade_eps:
        rows_c = [r for r in cas.rows if r.eps == eps]
        rows_f = [r for r in full.rows if r.eps == eps]
        assert torch.equal(worst_case(cas.clean, rows_c), worst_case(full.clean, rows_f))
        # every image the cascade attacked got exactly the verdict it gets when attacked with all the others
        for rc, rf in zip(rows_c, rows_f, strict=True):
            ran = rc.attacked
            assert torch.equal(rc.robust[ran], rf.robust[ran])
    acc = {c: {w["eps"]: w["accuracy"] for w in runs[c].worst_case} for c in (True, False)}
    assert acc[True] == acc[False]
