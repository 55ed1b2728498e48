import json

import pytest
import torch
from safetensors.torch import save_file

from bastion.errors import UnknownNameError, WeightsError
from bastion.models import (
    ARCHITECTURES,
    PRETRAINED,
    create_model,
    load_model,
    pretrained,
    read_meta,
    save_model,
)
from bastion.models.zoo import DEFAULT_DATASET


@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_every_architecture_forward_backward(arch):
    model = create_model(arch, seed=1)
    shape = model.meta.input_shape
    x = torch.rand(3, *shape, requires_grad=True)
    out = model(x)
    assert out.shape == (3, model.num_classes)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in model.parameters())
    assert model.meta.dataset == DEFAULT_DATASET[arch]


def test_create_model_is_deterministic_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b = create_model("mnist-cnn", seed=3), create_model("mnist-cnn", seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    c = create_model("mnist-cnn", seed=4)
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


def test_unknown_architecture_lists_valid_names():
    with pytest.raises(UnknownNameError) as e:
        create_model("resnet9000")
    assert "mnist-cnn" in str(e.value) and "logreg" in str(e.value)


@pytest.mark.parametrize("arch", ["logreg", "mnist-cnn-gap", "cifar-resnet"])
def test_exact_save_load_round_trip(tmp_path, arch):
    model = create_model(arch, seed=2).eval()
    path = save_model(model, tmp_path / "m.safetensors")
    loaded = load_model(path)
    assert not loaded.training
    assert loaded.meta == model.meta
    for (ka, va), (kb, vb) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    x = torch.rand(2, *model.meta.input_shape)
    assert torch.equal(model(x), loaded(x))
    assert read_meta(path).arch == arch


def test_corrupt_truncated_and_mismatched_files_name_the_file(tmp_path):
    model = create_model("logreg")
    good = save_model(model, tmp_path / "good.safetensors")
    data = good.read_bytes()

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) - 1000])
    with pytest.raises(WeightsError, match="truncated.safetensors"):
        load_model(truncated)

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01 not a safetensors file" * 10)
    with pytest.raises(WeightsError, match="garbage.safetensors"):
        load_model(garbage)

    pickled = tmp_path / "pickled.safetensors"
    torch.save(model.state_dict(), pickled)
    with pytest.raises(WeightsError, match="pickled.safetensors"):
        load_model(pickled)

    no_meta = tmp_path / "nometa.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(no_meta))
    with pytest.raises(WeightsError, match="without bastion metadata"):
        load_model(no_meta)

    mismatched = tmp_path / "mismatched.safetensors"
    meta = json.loads(json.dumps(model.meta.to_dict()))
    meta["arch"] = "mnist-cnn"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(mismatched), metadata={"bastion": json.dumps(meta)})
    with pytest.raises(WeightsError, match="do not match architecture 'mnist-cnn'"):
        load_model(mismatched)

    nan = tmp_path / "nan.safetensors"
    bad = {k: v.contiguous().clone() for k, v in model.state_dict().items()}
    bad["net.fc.weight"][0, 0] = float("nan")
    save_file(bad, str(nan), metadata={"bastion": json.dumps(model.meta.to_dict())})
    with pytest.raises(WeightsError, match="NaN"):
        load_model(nan)

    with pytest.raises(WeightsError, match="no such weights file"):
        load_model(tmp_path / "missing.safetensors")


#: (name, bar on the MNIST test set); the tests hold each at (bar - 0.5 pp) on the held-out mnist-5k
BARS = {"logreg": 0.91, "mnist-cnn": 0.99, "mnist-cnn-gap": 0.985}


@pytest.mark.parametrize("name", sorted(BARS))
def test_shipped_model_accuracy_on_heldout_mnist5k(name, mnist5k_test):
    from bastion.data import load_dataset
    from bastion.models import weights_path
    from bastion.training import accuracy

    assert weights_path(name).stat().st_size < 2 * 1024 * 1024
    model = pretrained(name)
    assert not model.training
    meta = model.meta
    assert meta.training["split"] == "train[5848:]" and meta.training["data"] == "mnist"
    assert "bastion train" in meta.training["command"]
    acc = accuracy(model, load_dataset("mnist-5k", "all"))
    assert acc >= BARS[name] - 0.005, f"{name}: {acc:.4f} on mnist-5k"


def test_pretrained_unknown_name():
    with pytest.raises(UnknownNameError) as e:
        pretrained("mnist-vit")
    assert all(n in str(e.value) for n in PRETRAINED)


@pytest.mark.parametrize("change, message", [
    ({"std": [0.0]}, "must be > 0"),
    ({"std": [float("nan")]}, "finite"),
    ({"mean": [0.1, 0.2, 0.3]}, "3 mean values for 1-channel"),
    ({"input_shape": [1, 0, 28]}, "input_shape"),
])
def test_bad_normalization_metadata_is_refused_naming_the_file(tmp_path, change, message):
    model = create_model("mnist-cnn")
    meta = {**model.meta.to_dict(), **change}
    path = tmp_path / "badmeta.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path), metadata={"bastion": json.dumps(meta)})
    with pytest.raises(WeightsError, match=f"badmeta.safetensors.*{message}"):
        load_model(path)


def test_create_model_refuses_an_unknown_data_set_and_seeds_only_the_cpu_rng(monkeypatch):
    with pytest.raises(UnknownNameError, match="cifar10"):
        create_model("cifar-resnet", dataset="cifar-10")
    calls = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda s: calls.append(s))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda s: calls.append(s))
    create_model("mnist-cnn", seed=7)
    assert calls == []  # torch.manual_seed would have reseeded every CUDA device's generator


def test_a_bart_trained_file_loads_with_its_barrage_by_path_too(tmp_path):
    from bastion.defenses.base import Defended
    from bastion.errors import ConfigError
    from bastion.models import resolve_model

    defended = pretrained("mnist-cnn-bart")
    with pytest.raises(ConfigError, match="defended.model"):
        save_model(defended, tmp_path / "x.safetensors")
    path = save_model(defended.model, tmp_path / "bart.safetensors")
    by_path = resolve_model(path)
    assert isinstance(by_path, Defended) and by_path.defense.to_dict() == defended.defense.to_dict()
    assert not isinstance(resolve_model("mnist-cnn"), Defended)
