"""A faster CPU evaluation of :func:`bastion._rng.keyed_uniform`, bit for bit the same values.

``bastion._rng`` hashes in int64 tensors and emulates the 32-bit multiplications with 16-bit halves (to
stay clear of int64 overflow), which costs ~30 tensor passes per hash. Here the same lowbias32 hash runs on
NumPy ``uint32`` arrays, whose multiplication and shifts are exactly the 32-bit modular operations the hash
is defined with (well-defined wrap-around, logical shifts), in place. Inputs on another device fall back to
the reference implementation. ``tests/defenses/bart/test_noise.py`` checks the equality.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

from bastion._rng import _M32, _hash32_int, keyed_uniform

_C1 = np.uint32(0x7FEB352D)
_C2 = np.uint32(0x846CA68B)


def _hash_inplace(x: np.ndarray, tmp: np.ndarray) -> np.ndarray:
    """lowbias32 of a uint32 array, in place (``tmp``: scratch of the same shape)."""
    np.right_shift(x, 16, out=tmp)
    x ^= tmp
    x *= _C1
    np.right_shift(x, 15, out=tmp)
    x ^= tmp
    x *= _C2
    np.right_shift(x, 16, out=tmp)
    x ^= tmp
    return x


@functools.lru_cache(maxsize=256)
def _base(seed: int, stream: int) -> int:
    return _hash32_int(seed ^ _hash32_int(stream * 0x9E3779B9 + 0x632BE5AB))


@functools.lru_cache(maxsize=64)
def _counter(size: int) -> np.ndarray:
    c = np.arange(size, dtype=np.uint32)
    c.setflags(write=False)
    return c


def _key_hash(keys: Tensor, base: int) -> np.ndarray:
    """The per-key part of :func:`bastion._rng.keyed_bits` (``(N,)`` uint32)."""
    k = keys.to(torch.int64).reshape(-1).numpy()
    lo = ((k & _M32) ^ base).astype(np.uint32)
    hi = ((k >> 32) + 0x5BD1E995).astype(np.uint32)  # the hash reads the low 32 bits (keys are >= 0)
    lo = _hash_inplace(lo, np.empty_like(lo))
    hi = _hash_inplace(hi, np.empty_like(hi))
    return lo ^ hi


def keyed_bits_np(keys: Tensor, size: int, *, seed: int, stream: int) -> np.ndarray:
    """(N, size) uint32: ``bastion._rng.keyed_bits(keys, (size,), seed=seed, stream=stream)``, for CPU keys."""
    k = _key_hash(keys, _base(seed, stream))[:, None]
    x = np.bitwise_xor(_counter(size)[None, :], k)
    tmp = np.empty_like(x)
    _hash_inplace(x, tmp)
    x += k
    return _hash_inplace(x, tmp)


def fast_keyed_uniform(
    keys: Tensor, shape: tuple[int, ...], *, seed: int, stream: int = 0, dtype: torch.dtype = torch.float32
) -> Tensor:
    """``bastion._rng.keyed_uniform`` (same values, bit for bit), faster on the CPU."""
    if keys.device.type != "cpu" or (keys < 0).any():
        return keyed_uniform(keys, shape, seed=seed, stream=stream, dtype=dtype)
    n = keys.shape[0]
    bits = keyed_bits_np(keys, math.prod(shape), seed=seed, stream=stream)
    bits >>= np.uint32(8)
    out = torch.from_numpy(bits.view(np.int32)).to(dtype)
    out *= 1.0 / 16777216.0
    return out.reshape(n, *shape)
