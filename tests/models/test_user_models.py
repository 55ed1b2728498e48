"""Your own models: factories with weights, TorchScript, torchvision/timm, presets; what is refused and how."""

from __future__ import annotations

import sys
import types
import urllib.error
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from bastion.errors import ConfigError, InputShapeError, UnknownNameError, WeightsError
from bastion.models import PRESETS, Preprocessing, UserModel, preset, resolve_model, wrap_model
from bastion.models.user import check_outputs, file_kind, preprocessing_of

FACTORY = '''
import torch
from torch import nn

def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))

def build5():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))

def broken():
    raise RuntimeError("CUDA driver not found")

def not_a_model():
    return 42
'''


@pytest.fixture
def factory(tmp_path) -> Path:
    f = tmp_path / "my_model.py"
    f.write_text(FACTORY)
    return f


def _net() -> nn.Module:
    torch.manual_seed(1)  # other weights than build()'s
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def test_factory_with_safetensors_or_state_dict_weights(factory, tmp_path):
    net = _net().eval()
    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save(net.state_dict(), tmp_path / "w.pt")
    x = torch.rand(2, 3, 8, 8)
    pre = Preprocessing(mean=(0.2, 0.5, 0.8), std=(0.3, 0.2, 0.1), classes=("a", "b", "c"))
    for w in ("w.safetensors", "w.pt"):
        m = resolve_model(f"{factory}:build", weights=tmp_path / w, preprocessing=pre)
        assert isinstance(m, UserModel) and not m.training
        mean, std = torch.tensor(pre.mean).view(1, 3, 1, 1), torch.tensor(pre.std).view(1, 3, 1, 1)
        assert torch.allclose(m(x), net((x - mean) / std), atol=1e-6)  # the file's weights, behind the normalization
        d = m.describe()
        assert d["arch"] == "my_model.py:build" and d["weights"] == w and len(d["weights_sha256"]) == 64
        assert m.classes == ("a", "b", "c")
    assert not list(tmp_path.glob("__pycache__"))  # nothing written beside your file


def test_a_module_factory(monkeypatch, factory):
    monkeypatch.syspath_prepend(str(factory.parent))
    m = resolve_model("my_model:build")
    assert isinstance(m, UserModel) and m.describe()["arch"] == "my_model:build"
    sys.modules.pop("my_model", None)


def test_weights_for_another_architecture_are_refused_with_the_difference(factory, tmp_path):
    save_file(_net().state_dict(), str(tmp_path / "w.safetensors"))
    with pytest.raises(WeightsError, match=r"do not match the model of my_model.py:build5.*'4.weight' has shape \[3, 4\]"):
        resolve_model(f"{factory}:build5", weights=tmp_path / "w.safetensors")
    save_file({"fc.weight": torch.zeros(3, 4)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(WeightsError, match="another architecture.*missing 0.bias"):
        resolve_model(f"{factory}:build", weights=tmp_path / "other.safetensors")


def test_factories_that_fail_are_one_line(factory):
    cases = {
        f"{factory}:broken": "the factory raised RuntimeError: CUDA driver not found",
        f"{factory}:not_a_model": "returned a int, not a torch.nn.Module",
        f"{factory}:nope": "has no function 'nope'; it defines broken, build, build5, not_a_model",
        f"{factory.parent / 'absent.py'}:build": "no such Python file",
        "no_such_module_xyz:build": "cannot import no_such_module_xyz: ModuleNotFoundError",
    }
    for spec, message in cases.items():
        with pytest.raises(ConfigError) as e:
            resolve_model(spec)
        assert message in str(e.value) and "\n" not in str(e.value)
    (factory.parent / "bad.py").write_text("def build(:\n")
    with pytest.raises(ConfigError, match=r"bad.py, line 1: SyntaxError"):
        resolve_model(f"{factory.parent / 'bad.py'}:build")


def test_pickled_models_are_never_unpickled(factory, tmp_path):
    net = _net()
    torch.save(net, tmp_path / "whole.pt")  # a whole module: loading it would run pickle code
    with pytest.raises(WeightsError, match="a torch.save checkpoint; bastion never unpickles"):
        resolve_model(tmp_path / "whole.pt")
    with pytest.raises(WeightsError, match=r"holds more than tensors \(it refers to torch.nn"):
        resolve_model(f"{factory}:build", weights=tmp_path / "whole.pt")


def test_torchscript_loads_and_torch_export_is_refused(tmp_path):
    net = _net().eval()
    torch.jit.script(net).save(str(tmp_path / "net.ts"))
    m = resolve_model(tmp_path / "net.ts", preprocessing=Preprocessing(classes=("a", "b", "c")))
    x = torch.rand(2, 3, 8, 8)
    assert file_kind(tmp_path / "net.ts") == "torchscript" and torch.allclose(m(x), net(x))
    assert m.describe()["arch"] == "net.ts (TorchScript)"
    with pytest.raises(ConfigError, match="--weights does not apply"):
        resolve_model(tmp_path / "net.ts", weights=tmp_path / "net.ts")
    torch.export.save(torch.export.export(net, (x,)), str(tmp_path / "net.pt2"))
    assert file_kind(tmp_path / "net.pt2") == "export"
    with pytest.raises(WeightsError, match="torch.export program.*unpickles parts of the file"):
        resolve_model(tmp_path / "net.pt2")


def test_bare_weights_and_unknown_names(tmp_path):
    save_file(_net().state_dict(), str(tmp_path / "w.safetensors"))
    with pytest.raises(WeightsError, match="weights without a model"):
        resolve_model(tmp_path / "w.safetensors")
    with pytest.raises(UnknownNameError, match="my_model.py:build"):
        resolve_model("resnet-nope")
    with pytest.raises(ConfigError, match="mnist-cnn is a bastion model"):
        resolve_model("mnist-cnn", preprocessing=preset("imagenet"))


def test_torchvision_and_timm_missing_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # import fails as when it is not installed
    monkeypatch.setitem(sys.modules, "timm", None)
    for name in ("torchvision:resnet18", "timm:resnet18"):
        with pytest.raises(ConfigError, match=f"{name} needs {name.split(':')[0]}, which does not import here"):
            resolve_model(name)


def _fake_torchvision(monkeypatch, url: str) -> None:
    """A stand-in for torchvision's model registry (torchvision does not import beside this torch)."""

    class Transforms:
        crop_size, resize_size, mean, std = [224], [256], [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]

    class Weights:
        meta = {"categories": ["a", "b", "c"]}

        def __init__(self) -> None:
            self.url = url

        def transforms(self) -> Transforms:
            return Transforms()

        def __str__(self) -> str:
            return "Tiny_Weights.IMAGENET1K_V1"

    models = types.SimpleNamespace(get_model=lambda name, weights=None: _net(),
                                   get_model_weights=lambda name: types.SimpleNamespace(DEFAULT=Weights()))
    monkeypatch.setitem(sys.modules, "torchvision", types.SimpleNamespace(models=models))


def test_torchvision_weights_offline_cached_and_safe(monkeypatch, tmp_path):
    url = "https://download.example/tiny-0123abcd.pth"
    _fake_torchvision(monkeypatch, url)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*_a, **_k):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError, match=r"not in .*checkpoints and could not be downloaded \(URLError"):
        resolve_model("torchvision:tiny")
    cached = tmp_path / "hub" / "checkpoints" / "tiny-0123abcd.pth"
    cached.parent.mkdir(parents=True, exist_ok=True)
    net = _net()
    torch.save(net.state_dict(), cached)
    m = resolve_model("torchvision:tiny")
    assert isinstance(m, UserModel) and m.classes == ("a", "b", "c") and m.input_shape == (3, 224, 224)
    assert m.preprocessing.resize == 256 and m.preprocessing.mean == (0.485, 0.456, 0.406)
    x = torch.rand(1, 3, 8, 8)
    assert torch.allclose(m.net(x), net(x))
    torch.save(net, cached)  # a cache file holding a pickled module is refused, not unpickled
    with pytest.raises(WeightsError, match="holds more than tensors"):
        resolve_model("torchvision:tiny")


def test_the_imagenet_preset_ships_the_1000_class_names():
    p = preset("imagenet")
    assert len(p.classes) == 1000 and len(set(p.classes)) == 1000
    assert p.classes[388] == "giant panda" and p.classes[368] == "gibbon" and p.classes[0] == "tench"
    assert p.size == (224, 224) and p.resize == 256 and p.in_channels == 3
    t = p.transform()
    assert t.resize == 256 and t.crop == (224, 224)
    assert "imagenet" in PRESETS


def test_preprocessing_layers_and_checks():
    own = Preprocessing(mean=(0.5,), std=(0.25,), classes=("x", "y"))
    merged = own.over(preset("imagenet"))
    assert merged.mean == (0.5,) and merged.classes == ("x", "y") and merged.size == (224, 224)
    with pytest.raises(ConfigError, match="together"):
        Preprocessing(mean=(0.5,))
    with pytest.raises(ConfigError, match="std must be > 0"):
        Preprocessing(mean=(0.5,), std=(0.0,))
    with pytest.raises(ConfigError, match="1 or 3 finite numbers"):
        Preprocessing(mean=(0.1, 0.2), std=(1, 1))


def test_wrap_model_keeps_the_mode_and_leaves_no_gradients():
    net = _net().train()
    m = wrap_model(net, mean=(0.5,), std=(0.5,), classes=("a", "b", "c"))
    assert m.training and net.training  # your model's mode is yours
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(m(x), net((x - 0.5) / 0.5))
    assert all(p.grad is None for p in net.parameters())
    assert preprocessing_of(m).classes == ("a", "b", "c")


def test_a_model_with_the_wrong_number_of_classes_is_refused():
    m = wrap_model(_net().eval())
    with pytest.raises(InputShapeError, match=r"returns 3 scores per image, but there are 10 classes \(0, 1, 2, \.\.\.: "
                                              r"the folder names\)"):
        check_outputs(m, torch.rand(1, 3, 8, 8), tuple(str(i) for i in range(10)), where="the folder names")
    check_outputs(m, torch.rand(1, 3, 8, 8), ("a", "b", "c"), where="x")
    with pytest.raises(AttributeError):
        _ = m.classes  # unknown class names: getattr(model, "classes", default) falls back
