from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from bastion.data import load_dataset
from bastion.models import Classifier, ModelMeta

SHARED_DATA = Path(os.environ.get("BASTION_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", help="device for tests that take one")
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.config.getoption("--device"))


@pytest.fixture(scope="session")
def shared_mnist_dir() -> Path:
    if not (SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"full MNIST not available at {SHARED_DATA} (only needed for this optional check)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def mnist5k_test():
    return load_dataset("mnist-5k", "test")


def tiny_meta(input_shape=(1, 8, 8), classes=10) -> ModelMeta:
    return ModelMeta(arch="tiny", dataset="synthetic", input_shape=input_shape, classes=tuple(str(i) for i in range(classes)),
                     mean=(0.5,) * input_shape[0], std=(0.5,) * input_shape[0])


def tiny_cnn(seed: int = 0, input_shape=(1, 8, 8), classes: int = 10) -> Classifier:
    """A small random conv net (fast enough for property tests)."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = input_shape
    net = nn.Sequential(OrderedDict(
        conv=nn.Conv2d(c, 4, 3, padding=1), relu=nn.ReLU(), flatten=nn.Flatten(), fc=nn.Linear(4 * h * w, classes)))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return Classifier(net, tiny_meta(input_shape, classes)).eval()


@pytest.fixture
def tiny_model() -> Classifier:
    return tiny_cnn()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow test: run with --runslow (CI runs them after the default suite)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
