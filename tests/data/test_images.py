"""Your own images: folder and CSV listings, lazy decoding, bad files, colour conversion, sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from bastion.data import ImageTransform, open_images
from bastion.data.images import ImageFiles, image_folder, image_list, single_image
from bastion.errors import ConfigError, DataError


def _rgb(seed: int, size: tuple[int, int] = (64, 64)) -> np.ndarray:
    return (np.random.default_rng(seed).random((size[1], size[0], 3)) * 255).astype(np.uint8)


def _folder(root, classes=("cat", "dog", "ship"), per_class=3, size=(64, 64)):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(_rgb(10 * c + i, size)).save(root / name / f"{i}.png")
    return root


def test_folder_lists_classes_in_sorted_order_and_decodes_exactly(tmp_path):
    root = _folder(tmp_path / "imgs", classes=("ship", "cat", "dog"))
    ds = open_images(f"folder:{root}", transform=ImageTransform())
    assert ds.classes == ("cat", "dog", "ship") and len(ds) == 9
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert ds.input_shape == (3, 64, 64) and ds.skipped == () and ds.converted == ()
    x = ds.batch(torch.tensor([4]))
    want = np.asarray(Image.open(root / "dog" / "1.png"), dtype=np.float32) / 255
    assert torch.equal(x[0], torch.from_numpy(want).permute(2, 0, 1))


def test_only_the_asked_images_are_decoded(tmp_path, monkeypatch):
    import bastion.data.images as images

    root = _folder(tmp_path / "imgs", per_class=4)
    ds = image_folder(root, transform=ImageTransform())
    seen = []
    real = images.decode_array
    monkeypatch.setattr(images, "decode_array", lambda p, t, **kw: seen.append(p.name) or real(p, t, **kw))
    sub = ds.spread(3)
    assert isinstance(sub, ImageFiles) and seen == []  # listing and selecting decode nothing
    assert sub.batch(slice(0, 2)).shape == (2, 3, 64, 64) and len(seen) == 2
    mem = sub.load()
    assert mem.images.shape == (3, 3, 64, 64) and mem.classes == ds.classes and torch.equal(mem.indices, sub.indices)


def test_spread_sees_every_class(tmp_path):
    ds = image_folder(_folder(tmp_path / "imgs", per_class=5), transform=ImageTransform())
    assert sorted(ds.spread(3).labels.tolist()) == [0, 1, 2]


def test_non_image_and_broken_files_are_skipped_and_named(tmp_path):
    root = _folder(tmp_path / "imgs")
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    (root / "dog" / ".DS_Store").write_bytes(b"\x00\x01")  # hidden: ignored silently
    (root / "loose.jpg").write_bytes(b"x")
    ds = image_folder(root, transform=ImageTransform())
    assert len(ds) == 9
    skipped = dict(ds.skipped)
    assert set(skipped) == {"cat/notes.txt", "dog/broken.png", "loose.jpg"}
    assert "not a PNG, JPEG or WebP" in skipped["cat/notes.txt"] and "not a readable PNG" in skipped["dog/broken.png"]
    with pytest.raises(DataError, match="loose.jpg"):
        image_folder(root, transform=ImageTransform(), strict=True)


def test_a_file_that_breaks_after_listing_names_itself(tmp_path):
    root = _folder(tmp_path / "imgs")
    ds = image_folder(root, transform=ImageTransform())
    data = (root / "cat" / "1.png").read_bytes()
    (root / "cat" / "1.png").write_bytes(data[: len(data) // 2])  # truncated after the header was checked
    with pytest.raises(DataError, match=r"cat/1\.png"):
        ds.batch(slice(0, 3))


def test_grayscale_images_become_rgb_with_three_equal_channels_and_are_listed(tmp_path):
    root = _folder(tmp_path / "imgs")
    gray = (np.arange(64 * 64).reshape(64, 64) % 256).astype(np.uint8)
    Image.fromarray(gray).save(root / "dog" / "gray.png")
    ds = image_folder(root, transform=ImageTransform(channels=3))
    assert ds.converted == ("dog/gray.png",)
    x = ds.batch([ds.paths.index(root / "dog" / "gray.png")])[0]
    assert x.shape == (3, 64, 64) and torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert torch.equal(x[0], torch.from_numpy(gray).float() / 255)
    one = image_folder(root, transform=ImageTransform(channels=1))  # and colour to grayscale for a 1-channel model
    assert one.input_shape == (1, 64, 64) and len(one.converted) == 9


def test_images_of_different_sizes_are_refused_unless_resized(tmp_path):
    root = _folder(tmp_path / "imgs")
    Image.fromarray(_rgb(99, (80, 60))).save(root / "cat" / "wide.png")
    with pytest.raises(DataError, match=r"2 different sizes.*80x60.*--input-size"):
        image_folder(root, transform=ImageTransform())
    ds = image_folder(root, transform=ImageTransform(resize=32, crop=(32, 32)))
    assert ds.input_shape == (3, 32, 32) and ds.batch(slice(None)).shape == (10, 3, 32, 32)


def test_resize_keeps_the_aspect_ratio_then_centre_crops(tmp_path):
    a = _rgb(5, (80, 60))
    Image.fromarray(a).save(tmp_path / "x.png")
    t = ImageTransform(resize=30, crop=(30, 30))
    assert t.resized(80, 60) == (40, 30) and t.output_size(80, 60) == (30, 30)
    x = single_image(tmp_path / "x.png", transform=t, classes=("a",)).batch([0])[0]
    small = np.asarray(Image.fromarray(a).resize((40, 30), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    assert torch.allclose(x, torch.from_numpy(small[:, 5:35]).permute(2, 0, 1))


def test_exif_orientation_is_applied(tmp_path):
    im = Image.fromarray(_rgb(3, (40, 20)))
    exif = im.getexif()
    exif[0x0112] = 6  # rotated 90 degrees: shown 20 wide, 40 high
    im.save(tmp_path / "r.jpg", exif=exif.tobytes())
    ds = single_image(tmp_path / "r.jpg", transform=ImageTransform(), classes=("a",))
    assert ds.input_shape == (3, 40, 20) and ds.batch([0]).shape == (1, 3, 40, 20)


def test_folders_are_matched_to_the_model_class_names(tmp_path):
    root = _folder(tmp_path / "imgs", classes=("giant_panda", "Gibbon"))
    classes = ("tench", "gibbon", "giant panda")
    ds = image_folder(root, transform=ImageTransform(), classes=classes)
    assert ds.classes == classes and sorted(set(ds.labels.tolist())) == [1, 2]
    # as many folders as classes, named otherwise (ImageNet's n01440764...): sorted order, as ImageFolder
    by_order = image_folder(_folder(tmp_path / "syn", classes=("n02", "n01", "n03")), transform=ImageTransform(),
                            classes=classes)
    assert by_order.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    with pytest.raises(DataError, match="not named after the model's 3 classes"):
        image_folder(_folder(tmp_path / "two", classes=("x", "y")), transform=ImageTransform(), classes=classes)


def test_a_csv_lists_images_with_names_or_numbers(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    for i in range(4):
        Image.fromarray(_rgb(i)).save(root / f"{i}.jpg")
    csv = tmp_path / "labels.csv"
    csv.write_text("file,label\n0.jpg,dog\n1.jpg,cat\n2.jpg,dog\n3.jpg,cat\nmissing.jpg,cat\n")
    ds = image_list(root, csv, transform=ImageTransform())
    assert ds.classes == ("cat", "dog") and ds.labels.tolist() == [1, 0, 1, 0]
    assert ds.skipped and "missing.jpg" in ds.skipped[0][0] and "line 6" in ds.skipped[0][1]
    with_model = image_list(root, csv, transform=ImageTransform(), classes=("ship", "cat", "dog"))
    assert with_model.labels.tolist() == [2, 1, 2, 1]
    csv.write_text("0.jpg,2\n1.jpg,0\n")
    assert image_list(root, csv, transform=ImageTransform()).labels.tolist() == [2, 0]
    csv.write_text("0.jpg,2,extra\n")
    with pytest.raises(DataError, match="line 1: expected two columns"):
        image_list(root, csv, transform=ImageTransform())
    csv.write_text("0.jpg,zebra\n")
    with pytest.raises(DataError, match="'zebra'"):
        image_list(root, csv, transform=ImageTransform(), classes=("cat", "dog"))


def test_specs_and_options_are_checked(tmp_path):
    _folder(tmp_path / "imgs")
    with pytest.raises(ConfigError, match="folder:PATH"):
        open_images("imgs", transform=ImageTransform())
    with pytest.raises(ConfigError, match="needs its labels"):
        open_images(f"images:{tmp_path / 'imgs'}", transform=ImageTransform())
    with pytest.raises(DataError, match="no such folder"):
        open_images(f"folder:{tmp_path / 'nope'}", transform=ImageTransform())
    with pytest.raises(ConfigError, match="1 .grayscale. or 3"):
        ImageTransform(channels=4)
    with pytest.raises(DataError, match="no PNG, JPEG or WebP image"):
        (tmp_path / "empty" / "a").mkdir(parents=True)
        open_images(f"folder:{tmp_path / 'empty'}", transform=ImageTransform())
