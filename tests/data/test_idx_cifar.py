import gzip
import io
import os
import pickle
import struct
import tarfile

import numpy as np
import pytest
import torch

from bastion.data import load_dataset
from bastion.errors import ChecksumError, DataError


def idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.astype(np.uint8).tobytes()


def write_idx(folder, split="t10k", n=7, *, gz=True, images=None, labels=None):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) if images is None else images
    labels = rng.integers(0, 10, n, dtype=np.uint8) if labels is None else labels
    files = {f"{split}-images-idx3-ubyte": idx_bytes(images, 2051), f"{split}-labels-idx1-ubyte": idx_bytes(labels, 2049)}
    for name, data in files.items():
        if gz:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return images, labels


def test_small_idx_files_load_exactly(tmp_path):
    images, labels = write_idx(tmp_path / "mnist")
    ds = load_dataset("mnist", "test", data_dir=tmp_path, verify=False)
    assert ds.images.shape == (7, 1, 28, 28)
    assert torch.equal((ds.images * 255).round().to(torch.uint8)[:, 0], torch.from_numpy(images))
    assert ds.labels.tolist() == labels.astype(int).tolist()
    assert set(ds.sha256) == {"t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}


def test_uncompressed_files_and_env_var(tmp_path, monkeypatch):
    write_idx(tmp_path / "fashion-mnist", gz=False)
    monkeypatch.setenv("BASTION_DATA", str(tmp_path))
    ds = load_dataset("fashion-mnist", "test", verify=False)
    assert len(ds) == 7 and ds.classes[0] == "T-shirt/top"


def test_wrong_checksum_is_refused_naming_the_file(tmp_path):
    write_idx(tmp_path / "mnist")
    with pytest.raises(ChecksumError, match="t10k-images-idx3-ubyte.gz"):
        load_dataset("mnist", "test", data_dir=tmp_path)


def test_truncated_gzip_and_truncated_payload(tmp_path):
    write_idx(tmp_path / "mnist")
    f = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="gzip"):
        load_dataset("mnist", "test", data_dir=tmp_path, verify=False)
    payload = idx_bytes(np.zeros((7, 28, 28), np.uint8), 2051)[:-100]
    f.write_bytes(gzip.compress(payload))
    with pytest.raises(DataError, match="truncated"):
        load_dataset("mnist", "test", data_dir=tmp_path, verify=False)


def test_wrong_magic(tmp_path):
    write_idx(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((7, 28, 28)), 2051)))
    with pytest.raises(DataError, match="magic"):
        load_dataset("mnist", "test", data_dir=tmp_path, verify=False)


def test_missing_files_fail_fast_with_names_and_place(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("mnist", "train", data_dir=tmp_path)
    msg = str(e.value)
    assert "train-images-idx3-ubyte.gz" in msg and str(tmp_path / "mnist") in msg and "download=True" in msg


def test_download_from_a_mirror_without_network(tmp_path, monkeypatch):
    """download=True fetches each missing file from the mirror list (a local file:// mirror here)."""
    from bastion.data import idx

    mirror = tmp_path / "mirror"
    write_idx(mirror)
    spec = idx.IdxSpec(name="mnist", subdir="mnist", classes=idx.MNIST.classes, urls=(mirror.as_uri(),),
                       md5_raw={}, md5_gz={})
    ds = idx.load(spec, "test", root=tmp_path / "cache", download=True, verify_checksum=False)
    assert len(ds) == 7 and (tmp_path / "cache" / "mnist" / "t10k-images-idx3-ubyte.gz").exists()


def test_full_mnist_checksums(shared_mnist_dir):
    ds = load_dataset("mnist", "test", data_dir=shared_mnist_dir)
    assert len(ds) == 10000 and torch.bincount(ds.labels)[1] == 1135


# --- CIFAR-10 ---------------------------------------------------------------------------------------

def cifar_batch(n=5, seed=0) -> tuple[bytes, np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, n).tolist()
    return pickle.dumps({b"data": data, b"labels": labels, b"batch_label": b"x"}, protocol=2), data, labels


def test_cifar_folder_format(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    blob, data, labels = cifar_batch()
    (folder / "test_batch").write_bytes(blob)
    ds = load_dataset("cifar10", "test", data_dir=tmp_path, verify=False)
    assert ds.images.shape == (5, 3, 32, 32) and ds.labels.tolist() == labels
    assert torch.equal((ds.images * 255).round().to(torch.uint8).reshape(5, -1), torch.from_numpy(data))
    with pytest.raises(ChecksumError, match="test_batch"):
        load_dataset("cifar10", "test", data_dir=tmp_path)


def test_cifar_tarball_format_and_truncation(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in ["test_batch"]:
            blob, _, _ = cifar_batch()
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    (tmp_path / "cifar10").mkdir()
    tb = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
    tb.write_bytes(buf.getvalue())
    assert len(load_dataset("cifar10", "test", data_dir=tmp_path, verify=False)) == 5
    with pytest.raises(ChecksumError, match="cifar-10-python.tar.gz"):
        load_dataset("cifar10", "test", data_dir=tmp_path)
    tb.write_bytes(buf.getvalue()[:200])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_dataset("cifar10", "test", data_dir=tmp_path, verify=False)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_cifar_pickle_cannot_run_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}, protocol=2))
    with pytest.raises(DataError, match="refusing to load posix.system|refusing to load os.system"):
        load_dataset("cifar10", "test", data_dir=tmp_path, verify=False)


def test_fashion_mnist_never_reads_mnist_files_from_the_data_root(tmp_path):
    write_idx(tmp_path)  # MNIST-named files directly in the root (the same names as Fashion-MNIST's)
    assert len(load_dataset("mnist", "test", data_dir=tmp_path, verify=False)) == 7  # MNIST may use the root
    with pytest.raises(DataError, match="fashion-mnist"):
        load_dataset("fashion-mnist", "test", data_dir=tmp_path, verify=False)


def test_a_failed_download_leaves_no_partial_file(tmp_path, monkeypatch):
    import http.client
    import urllib.request

    from bastion.data import _files

    class Broken(io.BytesIO):
        def read(self, *a):
            raise http.client.IncompleteRead(b"partial")

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Broken())
    target = tmp_path / "mnist"
    target.mkdir()
    with pytest.raises(DataError, match="IncompleteRead"):
        _files._download("t10k-images-idx3-ubyte.gz", target, ["http://mirror-a", "http://mirror-b"])
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("data", [np.full((2, 3072), 0.5), np.full((2, 3072), 300, dtype=np.int64)])
def test_cifar_batch_with_non_byte_pixels_is_refused(tmp_path, data):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": data, b"labels": [0, 1]}, protocol=2))
    with pytest.raises(DataError, match="0..255"):
        load_dataset("cifar10", "test", data_dir=tmp_path, verify=False)
