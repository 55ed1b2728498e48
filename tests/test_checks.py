"""check_images' messages: the right hint for the mistake that was made, and numbers that show it."""

import pytest
import torch

from bastion._checks import check_images
from bastion.errors import InputRangeError


def _message(x: torch.Tensor) -> str:
    with pytest.raises(InputRangeError) as e:
        check_images(x)
    return str(e.value)


def test_0_255_pixels_get_the_divide_by_255_hint():
    g = torch.Generator().manual_seed(0)
    assert "divide by 255" in _message((torch.rand(2, 1, 8, 8, generator=g) * 255).round())


def test_normalized_inputs_get_the_normalization_hint_not_the_0_255_one():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(2, 1, 28, 28, generator=g) - 0.1307) / 0.3081  # MNIST-normalized: about [-0.42, 2.82]
    text = _message(x)
    assert "normalized inputs" in text and "255" not in text


def test_values_above_1_that_are_not_whole_numbers_get_no_0_255_hint():
    g = torch.Generator().manual_seed(0)
    text = _message(torch.rand(2, 1, 8, 8, generator=g) * 3.7)
    assert "255" not in text and "normalized" not in text


def test_a_value_just_outside_the_bounds_is_shown_outside():
    x = torch.full((1, 1, 4, 4), 0.5)
    x[0, 0, 0, 0] = 1.000001
    assert "[0.5, 1.000001], outside the bounds [0.0, 1.0]" in _message(x)
    x[0, 0, 0, 0] = -1e-7
    assert "[-1e-07, 0.5]" in _message(x)
