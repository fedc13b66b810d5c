"""A NumPy replica of ``tf.random.stateless_normal`` (CPU/GPU algorithm), so the ONNX server draws
the same noise for a seed as the TF Serving SavedModel, without running TensorFlow per request.

``tf.random.stateless_normal(shape, seed=[s0, s1])`` with the default ``alg="auto_select"`` on
CPU and GPU (TF 2.21) is:

1. key/counter from the seed (``StatelessRandomGetKeyCounter``): one Philox-4x32-10 block of the
   counter ``(lo(s0), hi(s0), lo(s1), hi(s1))`` (seeds sign-extended to 64 bits) under the fixed
   key ``(0x3ec8f720, 0x02461e29)`` gives ``mix``; key = ``mix[0:2]``, counter =
   ``(0, 0, mix[2], mix[3])``;
2. element group ``g`` (4 values) is the Philox-4x32-10 block of ``counter + g`` (128-bit add);
3. Box-Muller on each pair of 32-bit words ``(a, b)``: ``u = float(a) in [0, 1)`` from the low 23
   bits (clamped to ``>= 1e-7``), ``v = 2 pi float(b)``; values ``sin(v) r, cos(v) r`` with
   ``r = sqrt(-2 log u)``, all in float32.

The integer stream is bit-exact. TensorFlow evaluates ``log``/``sin``/``cos`` with its own float32
routines, so a value may differ in the last bit or two (observed at most ~2.4e-7 absolute on
normals of magnitude < 6; ``tests/test_serving_onnx.py`` checks this against TensorFlow). TF
documents that this stream may change between TF versions; the test guards it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["stateless_normal"]

_MASK32 = np.uint64(0xFFFFFFFF)
_MUL_A, _MUL_B = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_KEY_A, _KEY_B = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
_SEED_KEY = (0x3EC8F720, 0x02461E29)


def _philox4x32_10(counter: Sequence[np.ndarray], key: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Philox-4x32 with 10 rounds on arrays of counters (uint32 words held in uint64 arrays)."""
    c0, c1, c2, c3 = (np.asarray(c, np.uint64) for c in counter)
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    for _ in range(10):
        p0 = _MUL_A * c0
        p1 = _MUL_B * c2
        c0, c1, c2, c3 = ((p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & _MASK32,
                          (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & _MASK32)
        k0 = (k0 + _KEY_A) & _MASK32
        k1 = (k1 + _KEY_B) & _MASK32
    return c0, c1, c2, c3


def _key_counter(seed: Sequence[int]) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    s0, s1 = (int(s) & 0xFFFFFFFFFFFFFFFF for s in seed)  # int32/int64 seeds, sign-extended
    words = [np.array([w], np.uint64) for w in (s0 & 0xFFFFFFFF, s0 >> 32, s1 & 0xFFFFFFFF, s1 >> 32)]
    mix = [int(m[0]) for m in _philox4x32_10(words, _SEED_KEY)]
    return (mix[0], mix[1]), (0, 0, mix[2], mix[3])


def _unit_float(words: np.ndarray) -> np.ndarray:
    """TF's ``Uint32ToFloat``: a float32 in [0, 1) from the low 23 bits."""
    bits = (words & np.uint64(0x7FFFFF)) | np.uint64(127 << 23)
    return bits.astype(np.uint32).view(np.float32) - np.float32(1.0)


def stateless_normal(shape: Sequence[int], seed: Sequence[int]) -> np.ndarray:
    """Standard normal float32 values equal to ``tf.random.stateless_normal(shape, seed)``
    (CPU/GPU, default algorithm) up to float32 rounding of ``log``/``sin``/``cos``.

    Args:
        shape: output shape.
        seed: two integers (int32 or int64 range), as TensorFlow's ``seed`` argument.

    Returns:
        A float32 array of ``shape``.
    """
    shape = tuple(int(s) for s in shape)
    size = int(np.prod(shape, dtype=np.int64))
    if size == 0:
        return np.zeros(shape, np.float32)
    key, counter = _key_counter(seed)
    groups = np.arange(-(-size // 4), dtype=np.uint64)
    low = np.uint64(counter[0]) + groups
    words = _philox4x32_10(
        (low & _MASK32, np.uint64(counter[1]) + (low >> np.uint64(32)),
         np.full(groups.shape, counter[2], np.uint64), np.full(groups.shape, counter[3], np.uint64)),
        key,
    )
    stream = np.stack(words, axis=-1).reshape(-1)
    u = np.maximum(_unit_float(stream[0::2]), np.float32(1e-7))
    # 2.0f * M_PI is a double in TF's C++; the product is rounded to float32.
    v = (2.0 * np.pi * _unit_float(stream[1::2]).astype(np.float64)).astype(np.float32).astype(np.float64)
    # Each float32 op of TF, evaluated in float64 and rounded once (correctly rounded float32).
    log_u = np.log(u.astype(np.float64)).astype(np.float32)
    radius = np.sqrt((np.float32(-2.0) * log_u).astype(np.float64)).astype(np.float32)
    out = np.empty(stream.shape, np.float32)
    out[0::2] = np.sin(v).astype(np.float32) * radius
    out[1::2] = np.cos(v).astype(np.float32) * radius
    return out[:size].reshape(shape)
