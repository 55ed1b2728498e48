"""bastion._outputs: atomic writes that never follow links, and JSON that stores NaN as null."""

import json
import math

import numpy as np
import pytest
import torch

from bastion._outputs import OutputFolder, atomic_write, finite_json
from bastion.errors import OutputError


def test_finite_json_stores_nan_and_inf_as_null_and_says_where():
    text, where = finite_json({"rows": [{"l2": float("nan")}, {"l2": 1.5}], "loss": torch.tensor(float("inf")),
                               "acc": np.float32(0.5), "n": torch.tensor(3), "ok": True, "name": None})
    assert json.loads(text) == {"rows": [{"l2": None}, {"l2": 1.5}], "loss": None, "acc": 0.5, "n": 3, "ok": True,
                                "name": None}
    assert where == ["rows[0].l2", "loss"]
    assert finite_json([math.nan])[1] == ["[0]"]


def test_atomic_write_replaces_a_link_and_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "target"
    target.write_text("keep")
    link = tmp_path / "out.json"
    link.symlink_to(target)
    atomic_write(link, lambda tmp: tmp.write_text("new"))
    assert target.read_text() == "keep" and not link.is_symlink() and link.read_text() == "new"

    def broken(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(link, broken)
    assert link.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "target"]


def test_output_folder_refuses_a_file_as_folder_and_names_outside_its_outputs(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is an existing file, not a folder"):
        OutputFolder(tmp_path / "f", ["a.json"]).check()
    outputs = OutputFolder(tmp_path / "o", ["a.json"]).check()
    with pytest.raises(ValueError, match="not one of this command's outputs"):
        outputs.write_text("b.json", "{}")
