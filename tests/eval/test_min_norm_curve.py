"""One run of a minimum-norm attack gives the evaluation a whole accuracy-vs-eps curve."""

import pytest
import torch
from torch import nn

from bastion.attacks import FMN, PGD, DeepFool, MinNormPGD
from bastion.data import load_dataset
from bastion.data.base import ImageDataset
from bastion.eval import Evaluation, RobustnessReport
from bastion.models import pretrained


class Counted(DeepFool):
    """DeepFool that records how many images each of its runs attacked."""

    def _run(self, model, task):
        RUNS.append(task.n)
        return super()._run(model, task)


RUNS: list[int] = []


@pytest.fixture(scope="module")
def data():
    return load_dataset("mnist-5k", "test").spread(40)


@pytest.fixture(scope="module")
def cnn():
    return pretrained("mnist-cnn")


def test_one_run_per_image_gives_a_row_per_eps(cnn, data):
    RUNS.clear()
    grid = [0.5, 1.0, 1.5, 2.0, 3.0]
    rep = Evaluation(suite=[Counted()], eps_grid=grid, cascade=False, batch_size=16, checks=False).run(cnn, data)
    assert sum(RUNS) == len(data)  # every image attacked once, not once per eps
    assert [(r.attack, r.eps, r.norm) for r in rep.rows] == [("deepfool-l2", e, "l2") for e in grid]
    # the same attack called directly: an image is broken at eps when it succeeded within eps
    res = DeepFool()(cnn, data.images, data.labels, keys=data.indices)
    accs = [r.accuracy for r in rep.rows]
    correct = res.pred_clean == data.labels
    for e, acc in zip(grid, accs, strict=True):
        broken = res.success & (res.norms["l2"] <= e)
        assert acc == pytest.approx(float((correct & ~broken).double().mean()))
    assert accs == sorted(accs, reverse=True) and accs[0] > accs[-1]
    row = rep.rows[2]
    assert row.l2_max is not None and row.l2_max <= 1.5 + 1e-5
    assert row.succeeded == int((correct & res.success & (res.norms["l2"] <= 1.5)).sum()) > 0
    # the report keeps the rows and reads back
    assert RobustnessReport.from_json(rep.to_json()).to_json() == rep.to_json()


def test_curves_cascade_with_the_radius_attacks_of_their_norm(cnn, data):
    """In a cascade the curve's rows join the threat model (norm, eps) they belong to: an L2 min-norm attack
    runs after the L2 PGD at each eps, only on the images PGD left, and never on Linf rows."""
    RUNS.clear()
    suite = [PGD(eps=1.0, norm="l2", steps=10), PGD(eps=0.1, steps=10), Counted()]
    rep = Evaluation(suite=suite, eps_grid=[1.0, 2.0], cascade=True, batch_size=64, checks=False).run(cnn, data)
    rows = {(r.attack, r.eps): r for r in rep.rows}
    assert set(rows) == {("pgd-l2", 1.0), ("pgd-l2", 2.0), ("pgd", 1.0), ("pgd", 2.0), ("deepfool-l2", 1.0),
                         ("deepfool-l2", 2.0)}
    for e in (1.0, 2.0):
        pgd, df = rows[("pgd-l2", e)], rows[("deepfool-l2", e)]
        assert df.attacked == round(pgd.accuracy * len(data))  # the images still robust in its group
        assert df.accuracy <= pgd.accuracy
    worst = {(w["norm"], w["eps"]): w["accuracy"] for w in rep.worst_case}
    assert worst[("l2", 1.0)] == rows[("deepfool-l2", 1.0)].accuracy
    assert worst[("linf", 2.0)] == rows[("pgd", 2.0)].accuracy  # the Linf group is untouched by the L2 curve
    assert sum(RUNS) == max(rows[("deepfool-l2", 1.0)].attacked, rows[("deepfool-l2", 2.0)].attacked)


def affine_data(n: int = 48) -> tuple[nn.Module, ImageDataset, torch.Tensor]:
    """An affine 10-class model on 8x8 inputs with its exact smallest L2 distances to a misclassification (the box
    plays no part: the inputs are in [0.3, 0.7] and the closest points stay inside [0, 1])."""
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(64, 10)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(10, 64, generator=g) * 0.3)
        lin.bias.copy_(torch.randn(10, generator=g))
    model = nn.Sequential(nn.Flatten(), lin).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = 0.3 + 0.4 * torch.rand(n, 1, 8, 8, generator=g)
    z = model(x)
    y = z.argmax(1)
    w = lin.weight[None] - lin.weight[y][:, None]
    dist = ((z - z.gather(1, y[:, None])).abs() / w.norm(dim=2)).scatter(1, y[:, None], float("inf")).amin(1)
    data = ImageDataset(name="affine", split="all", images=x, labels=y, classes=tuple(map(str, range(10))))
    return model, data, dist


def test_the_curve_equals_a_per_eps_evaluation_where_comparable():
    """On an affine model DeepFool's single run finds each image's exact smallest L2 distance, and L2 PGD at
    eps breaks an image exactly when that distance is below eps: per image, the curve from one run equals the
    per-eps evaluation, away from the images whose distance is within 5% of an eps (where PGD's finite steps
    and DeepFool's overshoot decide)."""
    model, data, dist = affine_data()
    grid = [0.1, 0.2, 0.3, 0.5]
    curve = Evaluation(suite=[DeepFool(overshoot=0.0)], eps_grid=grid, cascade=False, checks=False).run(model, data)
    sweep = Evaluation(suite=[PGD(eps=1.0, norm="l2", loss="margin", steps=100)], eps_grid=grid, cascade=False,
                       checks=False).run(model, data)
    per_c, per_s = curve.per_image, sweep.per_image
    assert per_c is not None and per_s is not None
    compared = 0
    for e in grid:
        rc = next(v for v in per_c["rows"].values() if v["eps"] == e)
        rs = next(v for v in per_s["rows"].values() if v["eps"] == e)
        clear = ((dist - e).abs() > 0.05 * e).tolist()
        for i, ok in enumerate(clear):
            if ok:
                compared += 1
                assert rc["robust"][i] == rs["robust"][i] == (0.0 if float(dist[i]) < e else 1.0), (e, i)
    assert compared >= 0.8 * len(grid) * len(data)
    # the accuracies follow the exact distances
    for row, e in zip(curve.rows, grid, strict=True):
        assert abs(row.accuracy - float((dist >= e).double().mean())) <= 0.1


def test_the_curve_in_l1_and_l0_and_without_a_grid(cnn, data):
    small = data.subset(torch.arange(10))
    rep = Evaluation(suite=[FMN(norm="l1", steps=30), FMN(norm="l0", steps=30)], eps_grid=[5.0, 20.0],
                     cascade=False, checks=False).run(cnn, small)
    assert [(r.attack, r.norm, r.eps) for r in rep.rows] == [
        ("fmn-l1", "l1", 5.0), ("fmn-l1", "l1", 20.0), ("fmn-l0", "l0", 5.0), ("fmn-l0", "l0", 20.0)]
    acc = {(r.attack, r.eps): r.accuracy for r in rep.rows}
    assert acc[("fmn-l1", 20.0)] <= acc[("fmn-l1", 5.0)] and acc[("fmn-l0", 20.0)] <= acc[("fmn-l0", 5.0)]
    assert acc[("fmn-l0", 20.0)] < 0.5
    # without a grid a minimum-norm attack keeps its single row
    one = Evaluation(suite=[MinNormPGD(steps=5, doublings=2, search_steps=2)], cascade=False, checks=False).run(
        cnn, small)
    assert [(r.attack, r.eps) for r in one.rows] == [("min-norm", None)]


def test_an_interrupted_evaluation_with_a_curve_resumes_to_the_same_numbers(cnn, data):
    """The curve's rows are saved together after its one run, and a resumed evaluation keeps them (the attack does
    not run again) or runs the curve as an uninterrupted one would."""
    small = data.subset(torch.arange(16))
    suite = [PGD(eps=1.0, norm="l2", steps=5), Counted(steps=20)]
    ev = Evaluation(suite=suite, eps_grid=[1.0, 2.0], cascade=True, checks=False)
    partials: list[RobustnessReport] = []
    full = ev.run(cnn, small, on_partial=partials.append)
    assert [len(p.per_image["order"]) for p in partials] == [1, 2, 4]  # PGD at 1, at 2, then the whole curve

    def numbers(rep: RobustnessReport) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rep.to_dict()["rows"]]

    RUNS.clear()
    again = ev.run(cnn, small, resume=partials[-1])  # every row done: nothing runs
    assert RUNS == [] and numbers(again) == numbers(full)
    again = ev.run(cnn, small, resume=partials[1])  # cut before the curve: it runs once, with the same result
    assert sum(RUNS) > 0 and numbers(again) == numbers(full)
