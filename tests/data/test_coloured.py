import numpy as np
import pytest
import torch

from bastion.data import DATASETS, load_dataset
from bastion.data.coloured import LUMA, MIN_LUMINANCE_GAP, colours
from bastion.defenses.bart import BaRT
from bastion.models import create_model
from tests.data.test_idx_cifar import write_idx


@pytest.fixture(scope="module")
def grey_and_colour():
    return load_dataset("mnist-5k", "test[:60]"), load_dataset("coloured-mnist-5k", "test[:60]")


def test_registered_with_their_splits():
    assert DATASETS["coloured-mnist-5k"] == DATASETS["mnist-5k"]
    assert DATASETS["coloured-mnist"] == ("train", "test")


def test_shape_range_and_labels_preserved(grey_and_colour):
    grey, ds = grey_and_colour
    assert ds.name == "coloured-mnist-5k" and ds.split == "test[:60]"
    assert ds.images.shape == (60, 3, 28, 28) and ds.images.dtype == torch.float32
    assert 0.0 <= float(ds.images.min()) and float(ds.images.max()) <= 1.0
    assert torch.equal(ds.labels, grey.labels) and torch.equal(ds.indices, grey.indices)
    assert ds.classes == grey.classes


def test_deterministic_and_keyed_by_the_image_index(grey_and_colour):
    _, ds = grey_and_colour
    again = load_dataset("coloured-mnist-5k", "test[:60]")
    assert torch.equal(ds.images, again.images)
    # an image has the same colours in any split or slice: they depend on its index in the file only
    full = load_dataset("coloured-mnist-5k", "all")
    assert torch.equal(full.images[ds.indices], ds.images)
    part = load_dataset("coloured-mnist-5k", "test[10:20]")
    assert torch.equal(part.images, ds.images[10:20])


def test_the_digit_is_the_grey_ink_blended_between_two_colours(grey_and_colour):
    grey, ds = grey_and_colour
    bg, fg = colours(ds.indices, stream=1)
    a = grey.images
    assert torch.allclose(ds.images, (1 - a) * bg[:, :, None, None] + a * fg[:, :, None, None], atol=1e-6)
    corner = ds.images[:, :, 0, 0]  # MNIST's corners are background
    assert torch.allclose(corner, bg, atol=1e-6)
    luma = torch.tensor(LUMA)
    assert bool((((fg - bg) * luma).sum(1).abs() >= MIN_LUMINANCE_GAP).all())


def test_colour_actually_varies(grey_and_colour):
    _, ds = grey_and_colour
    corner = ds.images[:, :, 0, 0]
    assert float(corner.std(0).min()) > 0.15  # backgrounds differ from image to image, in every channel
    # and the images are not grey: channels differ within an image
    assert float((ds.images.amax(1) - ds.images.amin(1)).mean()) > 0.1
    assert len({tuple(c) for c in corner.mul(255).round().int().tolist()}) == 60


def test_streams_differ():
    keys = torch.arange(20)
    assert not torch.equal(colours(keys, stream=2)[0], colours(keys, stream=3)[0])
    assert torch.equal(colours(keys, stream=2)[0], colours(keys, stream=2)[0])


def test_full_mnist_version_from_idx_files(tmp_path):
    images = np.zeros((5, 28, 28), np.uint8)
    images[:, 10:18, 12:16] = 255
    write_idx(tmp_path / "mnist", split="train", n=5, images=images, labels=np.arange(5, dtype=np.uint8))
    ds = load_dataset("coloured-mnist", "train[1:4]", data_dir=tmp_path, verify=False)
    assert ds.images.shape == (3, 3, 28, 28) and ds.labels.tolist() == [1, 2, 3]
    assert ds.indices.tolist() == [1, 2, 3]
    bg, fg = colours(ds.indices, stream=2)
    assert torch.allclose(ds.images[:, :, 0, 0], bg) and torch.allclose(ds.images[:, :, 12, 13], fg)


def test_models_and_all_ten_bart_groups_take_it(grey_and_colour):
    _, ds = grey_and_colour
    model = create_model("mnist-cnn", dataset="coloured-mnist-5k")
    assert model.meta.input_shape == (3, 28, 28) and model.meta.dataset == "coloured-mnist"
    assert model(ds.images[:4]).shape == (4, 10)
    bart = BaRT(k=10)
    _, draw = bart(ds.images[:4], generator=torch.Generator().manual_seed(0), return_params=True)
    assert len(draw.names) == 10 and bool((draw.counts == 10).all())
