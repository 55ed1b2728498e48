"""Error messages show what the user passed, never a Python object's repr with its memory address."""

from __future__ import annotations

import pytest
import torch

from bastion.errors import BastionError


def _generator():
    yield 1


def _cases():
    from bastion.attacks import FGSM, PGD, eot
    from bastion.data import load_dataset
    from bastion.defenses.bart import BaRT
    from bastion.factory import make_attack
    from bastion.models import create_model

    model = create_model("logreg").eval()
    x, y = torch.rand(2, 1, 28, 28), torch.tensor([1, 2])
    return {
        "pgd eps": lambda: PGD(eps=object()),
        "pgd steps": lambda: PGD(eps=0.1, steps=_generator()),
        "target": lambda: FGSM(eps=0.1)(model, x, y, target=object()),
        "bart group": lambda: BaRT(groups=[_generator()], k=1),
        "bart config": lambda: BaRT.from_dict(_generator()),
        "factory": lambda: make_attack("pgd", eps=object()),
        "factory name": lambda: make_attack(object()),
        "eot": lambda: eot(model, n=_generator()),
        "data set": lambda: load_dataset(object()),
        "model": lambda: create_model(object()),
    }


@pytest.mark.parametrize("case", sorted(_cases()))
def test_no_object_address_in_error_messages(case):
    with pytest.raises(BastionError) as e:
        _cases()[case]()
    assert "0x" not in str(e.value) and " at " not in str(e.value), str(e.value)


def test_shown_keeps_plain_values_and_describes_the_rest():
    from bastion._checks import shown

    assert shown(0.25) == "0.25" and shown("pgd") == "'pgd'" and shown((0.1, 0.2)) == "(0.1, 0.2)"
    assert shown(object()) == "an object" and shown(_generator()) == "a generator"
    assert shown(torch.zeros(2, 3)) == "a float32 tensor of shape (2, 3)"
    assert shown(10**5000) == "an integer of thousands of digits"
    assert shown("x" * 500).endswith("(502 characters)")
