"""Masked (autoregressive) ``k x k`` ``C -> C`` convolutions: triangular maps and their solves.

A cross-correlation ``y[i, j, o] = sum_{a, b, c} K[a, b, c, o] x[i + a - ah, j + b - aw, c]``
(zero padding, ``(ah, aw)`` = the *anchor* tap that sits on the output pixel) is a linear map of
the ``H * W * C`` vector ``x``. Masking ``K`` so that output ``(i, j, o)`` only reads inputs that
come *earlier* in raster order (rows top to bottom, pixels left to right, channels in order) or
the same pixel's channels ``c <= o`` makes the map triangular in that order; its diagonal is the
diagonal of the anchor tap ``K[ah, aw]`` repeated at every pixel. Hence:

* ``log|det| = H * W * sum_c log|K[ah, aw, c, c]|`` (a sum of logs; no ``slogdet``);
* the inverse is a forward substitution, which this module runs in pure TF (XLA and ONNX
  friendly: ``H`` unrolled row steps of one matmul each, or a fixed-count ``tf.while_loop`` of
  gathers, a small matmul and a ``ScatterND``).

Two anchors are used by the layers:

* ``"center"`` ``(k // 2, k // 2)``: the PixelCNN / Emerging-convolution raster mask; taps in the
  rows above reach up to ``p = k // 2`` pixels to the *right*;
* ``"corner"`` ``(k - 1, k - 1)``: the CInC / FInC conv with top-left padding ``k - 1``; every
  tap is up and/or left of the output pixel.

Schedules (the order of the substitution):

* ``"rows"`` (default): one image row per step, ``H`` steps, unrolled (no loop). A row reads
  the ``ah`` rows above (already solved) and, within the row, only pixels to its left: with
  ``r = y_row - (rows above) * K[:ah]`` the row solves ``x_row T = r``, where ``T`` is the
  ``(W C) x (W C)`` block-Toeplitz map of the anchor row's taps. ``T^-1`` is again block
  Toeplitz, ``[T^-1]_{j', j} = G_{j - j'}``, with ``G(z) = A(z)^-1`` the inverse power series of
  ``A(z) = sum_d K[ah, aw - d] z^d``: ``G_n = G_0 [Psi^n]_00`` for the companion matrix ``Psi``
  of that recurrence, all powers by ``log2 W`` doublings (matmuls of parameters only: folded to
  a constant at export). Each step is then one matmul (the rows-above taps folded into the same
  step matrix when ``W C`` is small, a ``conv2d`` on the ``ah``-row strip otherwise);
* ``"sequential"``: one pixel per step, raster order, ``H * W`` steps (the reference);
* ``"wavefront"``: every pixel with ``s * i + j = t`` at once, ``s * (H - 1) + W`` steps. A tap at
  offset ``(da, db)`` (``da <= 0``) is read before pixel ``(i, j)`` is solved iff
  ``s * da + db < 0``. Same-row taps have ``da = 0, db < 0``: fine for any ``s``. Rows above have
  ``da <= -1`` and ``db <= r`` (``r`` = the mask's reach to the right), so ``s = r + 1`` is the
  smallest slope that works: ``s = 1`` (anti-diagonals) for the ``"corner"`` anchor, ``s = p + 1``
  for the ``"center"`` anchor (a 3 x 3 raster mask needs ``2i + j = t``). Within a pixel the
  ``C`` channels are solved by multiplying with ``M^-1``, the inverse of the anchor tap (upper
  triangular in ``(c, o)``), computed from the parameters only as a product of
  ``ceil(log2 C)`` Neumann factors (matmuls: folded to a constant at export). The loop is a
  fixed-count ``tf.while_loop`` (ONNX ``Loop``).

Gradients of `solve` do not differentiate through the loop: ``x = A^-1 y`` gives
``dL/dy = A^-T g`` and ``dL/dK = -(filter gradient of conv(x, K) at output gradient dL/dy)``.
``A^-T g`` is again a masked-conv solve: with ``R`` reversing ``H``, ``W`` and ``C``,
``R A^T R`` is the correlation with kernel ``K_B[a, b, c, o] = K[a, b, C-1-o, C-1-c]`` (same
taps, same anchor, same mask), so the backward pass is one more wavefront solve.

References:
    1. Hoogeboom, van den Berg & Welling, "Emerging Convolutions for Generative Normalizing
       Flows", ICML 2019, arXiv:1901.11137.
    2. Nagar, Dufraisse & Varma, "CInC Flow: Characterizable Invertible 3x3 Convolution",
       arXiv:2107.01358.
    3. Kallappa, Nagar & Varma, "FInC Flow: Fast and Invertible k x k Convolutions for
       Normalizing Flows", arXiv:2301.09266.
    4. Nagar & Varma, "Parallel Backpropagation for Inverse of a Convolution with Application to
       Normalizing Flows", AISTATS 2025.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import tensorflow as tf

__all__ = [
    "adjoint_kernel",
    "anchor_of",
    "centre_inverse",
    "log_det",
    "mask",
    "masked_conv",
    "masked_kernel",
    "reverse_all",
    "row_inverse",
    "solve",
    "wavefront_slope",
]


def anchor_of(kernel_shape, anchor="center") -> tuple[int, int]:
    """The anchor tap ``(ah, aw)`` of a ``(kh, kw, ...)`` kernel: ``"center"``, ``"corner"`` or a pair."""
    kh, kw = int(kernel_shape[0]), int(kernel_shape[1])
    if anchor == "center":
        return kh // 2, kw // 2
    if anchor == "corner":
        return kh - 1, kw - 1
    ah, aw = (int(v) for v in anchor)
    if not (0 <= ah < kh and 0 <= aw < kw):
        raise ValueError(f"anchor {anchor} lies outside a {kh} x {kw} kernel")
    return ah, aw


def mask(kh: int, kw: int, channels: int, anchor=(1, 1), strict_centre: bool = False) -> np.ndarray:
    """The ``(kh, kw, C, C)`` 0/1 raster mask: taps in earlier rows, earlier pixels of the anchor
    row, and the anchor's channels ``c <= o`` (``c < o`` if ``strict_centre``)."""
    ah, aw = anchor
    m = np.zeros((kh, kw, channels, channels), np.float32)
    for a in range(kh):
        for b in range(kw):
            da, db = a - ah, b - aw
            if da < 0 or (da == 0 and db < 0):
                m[a, b] = 1.0
    m[ah, aw] = np.triu(np.ones((channels, channels), np.float32), 1 if strict_centre else 0)
    return m


def masked_kernel(kernel, anchor="center", diagonal=None) -> tf.Tensor:
    """Applies the raster mask to a ``(kh, kw, C, C)`` kernel (``C`` in, ``C`` out).

    ``diagonal`` (shape ``(C,)``), if given, replaces the anchor tap's diagonal, so a layer can
    parameterise it as ``sign * exp(log_scale)`` and the map stays invertible for every value.
    """
    kernel = tf.convert_to_tensor(kernel)
    kh, kw, c_in, c_out = kernel.shape
    if c_in != c_out:
        raise ValueError(f"a triangular convolution maps C -> C channels, got kernel {kernel.shape}")
    ah, aw = anchor_of(kernel.shape, anchor)
    strict = diagonal is not None
    out = kernel * tf.constant(mask(kh, kw, c_in, (ah, aw), strict), kernel.dtype)
    if diagonal is not None:
        diagonal = tf.convert_to_tensor(diagonal, kernel.dtype)
        onehot = np.zeros((kh, kw, 1, 1), np.float32)
        onehot[ah, aw] = 1.0
        out = out + tf.constant(onehot, kernel.dtype) * tf.linalg.diag(diagonal)
    return out


def _check_spatial(x_shape, kernel_shape, what="masked_conv"):
    h, w = x_shape[-3], x_shape[-2]
    kh, kw = int(kernel_shape[0]), int(kernel_shape[1])
    if h is None or w is None:
        raise ValueError(f"{what} needs static H and W, got shape {tuple(x_shape)}")
    if h < kh or w < kw:
        raise ValueError(f"{what} needs H >= {kh} and W >= {kw} (the kernel size), got ({h}, {w})")
    if x_shape[-1] is not None and x_shape[-1] != kernel_shape[2]:
        raise ValueError(f"{what}: kernel has {kernel_shape[2]} channels, input has {x_shape[-1]}")


def masked_conv(x, kernel, anchor="center") -> tf.Tensor:
    """``y = K * x`` with zero padding that puts tap ``anchor`` on the output pixel.

    ``kernel`` must already be masked (`masked_kernel`). Shapes ``(B, H, W, C) -> (B, H, W, C)``.
    """
    kernel = tf.convert_to_tensor(kernel)
    kh, kw = int(kernel.shape[0]), int(kernel.shape[1])
    ah, aw = anchor_of(kernel.shape, anchor)
    _check_spatial(x.shape, kernel.shape)
    padded = tf.pad(x, [[0, 0], [ah, kh - 1 - ah], [aw, kw - 1 - aw], [0, 0]])
    return tf.nn.conv2d(padded, kernel, strides=1, padding="VALID")


def log_det(diagonal, height: int, width: int) -> tf.Tensor:
    """``H * W * sum_c log|diag_c|``: the log-det of the masked convolution (a scalar)."""
    diagonal = tf.convert_to_tensor(diagonal)
    return float(height * width) * tf.reduce_sum(tf.math.log(tf.abs(diagonal)))


def wavefront_slope(kh: int, kw: int, anchor) -> int:
    """Smallest integer ``s`` with ``s * da + db < 0`` for every off-anchor tap of the mask."""
    ah, aw = anchor
    slope = 1
    for a in range(kh):
        for b in range(kw):
            da, db = a - ah, b - aw
            if da < 0:
                slope = max(slope, math.floor(db / -da) + 1)
    return slope


def reverse_all(x) -> tf.Tensor:
    """Reverses ``H``, ``W`` and ``C`` (the map ``R`` of the adjoint identity)."""
    return tf.reverse(x, axis=[-3, -2, -1])


def adjoint_kernel(kernel) -> tf.Tensor:
    """``K_B[a, b, c, o] = K[a, b, C-1-o, C-1-c]``: ``R A^T R`` is the masked conv with ``K_B``."""
    return tf.reverse(tf.transpose(kernel, [0, 1, 3, 2]), axis=[2, 3])


def centre_inverse(centre) -> tf.Tensor:
    """Inverse of an upper-triangular ``C x C`` matrix ``M = D (I + N)`` by matmuls only:
    ``(I + N)^-1 = (I - N)(I + N^2)(I + N^4)...`` (``N`` nilpotent), then ``D^-1`` on the right."""
    centre = tf.convert_to_tensor(centre)
    c = int(centre.shape[-1])
    d = tf.linalg.diag_part(centre)
    nil = (centre - tf.linalg.diag(d)) / d[:, None]  # D^-1 U, strictly upper
    eye = tf.eye(c, dtype=centre.dtype)
    inv = eye - nil
    power = nil
    for _ in range(max(0, math.ceil(math.log2(max(c, 1)))) - 1):
        power = power @ power
        inv = inv @ (eye + power)
    return inv / d[None, :]


@lru_cache(maxsize=64)
def _schedule(h: int, w: int, kh: int, kw: int, anchor: tuple[int, int], order: str):
    """Index tables of the substitution, in the slot layout of the padded, flattened image.

    Slots: the ``(H + kh - 1) x (W + kw - 1)`` zero-padded image in raster order, then ``L``
    scratch slots (where the unused entries of short fronts write), then one slot that stays 0.
    Returns ``(front (T, L), neighbours (T, L, n_taps), y_index (T, L), taps, slots, L)``.
    """
    ah, aw = anchor
    wp = w + kw - 1
    n_image = (h + kh - 1) * wp
    taps = [(a, b) for a in range(kh) for b in range(kw) if (a - ah < 0 or (a == ah and b < aw))]
    if order == "sequential":
        key = lambda i, j: i * w + j
    elif order == "wavefront":
        slope = wavefront_slope(kh, kw, anchor)
        key = lambda i, j: slope * i + j
    else:
        raise ValueError(f"order must be 'rows', 'wavefront' or 'sequential', got {order!r}")
    fronts: dict[int, list[tuple[int, int]]] = {}
    for i in range(h):
        for j in range(w):
            fronts.setdefault(key(i, j), []).append((i, j))
    steps = sorted(fronts)
    width = max(len(f) for f in fronts.values())
    # At least two lanes: with one-pixel fronts, TF 2.21's pfor (batch_jacobian of a solve)
    # aborts the process (double free) - measured; a scratch lane costs nothing noticeable.
    width = max(width, 2)
    zero_slot = n_image + width
    front = np.empty((len(steps), width), np.int32)
    neighbours = np.full((len(steps), width, max(len(taps), 1)), zero_slot, np.int32)
    y_index = np.zeros((len(steps), width), np.int32)
    for t, step in enumerate(steps):
        for l in range(width):
            if l < len(fronts[step]):
                i, j = fronts[step][l]
                front[t, l] = (i + ah) * wp + (j + aw)
                y_index[t, l] = i * w + j
                for n, (a, b) in enumerate(taps):
                    neighbours[t, l, n] = (i + a) * wp + (j + b)  # padded coords: i + ah + (a - ah)
            else:
                front[t, l] = n_image + l
    return front, neighbours, y_index, tuple(taps), zero_slot + 1, width


#: Largest ``W * C`` for which a row step is a single matmul (rows-above taps folded into the
#: step matrix: ~``1 + ah`` times the in-row FLOPs, but half the ops per step); above it the
#: rows above go through a ``conv2d`` of the strip (FLOPs of a plain conv).
FUSED_ROW_STEP_MAX = 256


def row_inverse(kernel, anchor, width: int) -> tf.Tensor:
    """``T^-1``, ``(W C, W C)``: the inverse of the in-row map ``x_row -> y_row`` (row vectors,
    ``y_row = x_row T``) of a masked kernel whose anchor row reaches only to the left.

    ``T^-1 = [G_{j - j'}]`` (zero below the block diagonal) with ``G(z) A(z) = I``,
    ``A_d = K[ah, aw - d]``: ``G_0 = A_0^-1`` and ``G_n = -(sum_{d >= 1} G_{n-d} A_d) A_0^-1``,
    evaluated as ``G_n = G_0 [Psi^n]_00`` with ``Psi`` the ``(aw C) x (aw C)`` companion matrix,
    the ``W`` powers by doubling (``ceil(log2 W)`` batched matmuls, parameters only)."""
    kernel = tf.convert_to_tensor(kernel)
    ah, aw = anchor
    c = int(kernel.shape[-1])
    g0 = centre_inverse(kernel[ah, aw])
    reach = min(aw, width - 1)
    if reach == 0:
        g = g0[None]
    else:
        # S_n = [G_n, ..., G_{n-reach+1}] = S_{n-1} Psi; Psi's first block column holds the
        # recurrence, the others shift the state by one block.
        first = tf.concat([-(kernel[ah, aw - d] @ g0) for d in range(1, reach + 1)], axis=0)
        shift = np.zeros((reach * c, (reach - 1) * c), np.float32)
        shift[: (reach - 1) * c] = np.eye((reach - 1) * c, dtype=np.float32)
        psi = tf.concat([first, tf.constant(shift, kernel.dtype)], axis=1)
        powers = tf.eye(reach * c, dtype=kernel.dtype)[None]
        square = psi
        while int(powers.shape[0]) < width:
            powers = tf.concat([powers, powers @ square], axis=0)
            if int(powers.shape[0]) < width:
                square = square @ square
        g = g0[None] @ powers[:width, :c, :c]
    # blocks past the last computed one (all of them when the row has no left taps) and block
    # W, which the gather reads below the block diagonal, are zero
    g = tf.concat([g, tf.zeros([width + 1 - int(g.shape[0]), c, c], kernel.dtype)], axis=0)
    lag = np.arange(width)[None, :] - np.arange(width)[:, None]  # j - j'
    blocks = tf.gather(g, np.where(lag >= 0, lag, width).astype(np.int32))  # (W, W, C, C)
    return tf.reshape(tf.transpose(blocks, [0, 2, 1, 3]), [width * c, width * c])


def _solve_rows(y, kernel, anchor):
    kh, kw, c, _ = (int(v) for v in kernel.shape)
    h, w = int(y.shape[-3]), int(y.shape[-2])
    ah, aw = anchor
    wp = w + kw - 1
    tinv = row_inverse(kernel, anchor, w)
    pad = [[0, 0], [aw, kw - 1 - aw], [0, 0]]
    fused = ah > 0 and w * c <= FUSED_ROW_STEP_MAX
    if fused:
        # strip (ah, W + kw - 1, C) -> row (W, C) through the taps above, as one dense matrix
        place = np.zeros((kw, wp, w), np.float32)
        for b in range(kw):
            place[b, np.arange(w) + b, np.arange(w)] = 1.0
        upper = tf.einsum("bpj,abco->apcjo", tf.constant(place, kernel.dtype), kernel[:ah])
        upper = tf.reshape(upper, [ah * wp * c, w * c])
        step = tf.concat([-(upper @ tinv), tinv], axis=0)
    zero_row = tf.zeros_like(y[:, 0])
    above = [tf.pad(zero_row, pad)] * ah  # padded rows above, (B, W + kw - 1, C)
    rows = []
    for i in range(h):
        if fused:
            rhs = tf.concat([tf.reshape(r, [-1, wp * c]) for r in above[len(above) - ah:]]
                            + [tf.reshape(y[:, i], [-1, w * c])], axis=1)
            x_row = tf.reshape(rhs @ step, [-1, w, c])
        else:
            r = y[:, i]
            if ah:
                strip = tf.stack(above[len(above) - ah:], axis=1)
                r = r - tf.nn.conv2d(strip, kernel[:ah], 1, "VALID")[:, 0]
            x_row = tf.reshape(tf.reshape(r, [-1, w * c]) @ tinv, [-1, w, c])
        rows.append(x_row)
        if ah:
            above.append(tf.pad(x_row, pad))
    return tf.stack(rows, axis=1)


def _solve_loop(y, kernel, anchor, order):
    if order == "rows":
        return _solve_rows(y, kernel, anchor)
    kh, kw, c, _ = (int(v) for v in kernel.shape)
    h, w = int(y.shape[-3]), int(y.shape[-2])
    front, neighbours, y_index, taps, slots, width = _schedule(h, w, kh, kw, anchor, order)
    ah, aw = anchor
    batch = tf.shape(y)[0]
    # Column layout (slot, channel, batch): a front's patches reshape to (L, taps * C, B) with no
    # transpose, and one matmul per step gives x_front = M^-T (y_front - sum_taps K_tap^T x_tap).
    minv_t = tf.transpose(centre_inverse(kernel[ah, aw]))
    step_matrix = minv_t
    if taps:
        off_t = tf.transpose(tf.reshape(tf.stack([kernel[a, b] for a, b in taps]), [-1, c]))
        step_matrix = tf.concat([-(minv_t @ off_t), minv_t], axis=1)  # (C, (taps + 1) C)
    step_matrix = step_matrix[None]
    y_flat = tf.reshape(tf.transpose(y, [1, 2, 3, 0]), [h * w, c, batch])
    x0 = tf.zeros([slots, c, batch], y.dtype)
    steps = front.shape[0]
    # numpy index tables embed as constants (a module-level tf.constant would be a graph input)

    def body(t, x_flat):
        rhs = tf.gather(y_flat, tf.gather(y_index, t))  # (L, C, B)
        if taps:
            patches = tf.gather(x_flat, tf.gather(neighbours, t))  # (L, taps, C, B)
            rhs = tf.concat([tf.reshape(patches, [width, len(taps) * c, batch]), rhs], axis=1)
        values = tf.matmul(step_matrix, rhs)
        x_flat = tf.tensor_scatter_nd_update(x_flat, tf.gather(front, t)[:, None], values)
        return t + 1, x_flat

    _, x_flat = tf.while_loop(lambda t, _: t < steps, body, (tf.constant(0), x0),
                              maximum_iterations=steps)
    hp, wp = h + kh - 1, w + kw - 1
    image = tf.reshape(x_flat[: hp * wp], [hp, wp, c, batch])[ah : ah + h, aw : aw + w]
    return tf.transpose(image, [3, 0, 1, 2])


ORDERS = ("rows", "wavefront", "sequential")


def solve(y, kernel, anchor="center", order="rows", custom_gradient=True) -> tf.Tensor:
    """``x`` with ``masked_conv(x, kernel, anchor) == y`` by forward substitution.

    ``kernel`` must be masked (`masked_kernel`) with a nonzero anchor diagonal. ``order``:
    ``"rows"`` (a row per step, default), ``"wavefront"`` (parallel fronts in a loop) or
    ``"sequential"`` (pixel by pixel in a loop, the reference). With ``custom_gradient`` the backward pass is one more solve with the adjoint
    kernel (no autodiff through the loop); without, autodiff differentiates the loop.
    Shapes ``(B, H, W, C) -> (B, H, W, C)``; ``H`` and ``W`` static.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    y = tf.convert_to_tensor(y)
    kernel = tf.convert_to_tensor(kernel, y.dtype)
    _check_spatial(y.shape, kernel.shape, "solve")
    anchor = anchor_of(kernel.shape, anchor)
    kh, kw, c, _ = (int(v) for v in kernel.shape)
    if not custom_gradient:
        return _solve_loop(y, kernel, anchor, order)
    grad_mask = tf.constant(mask(kh, kw, c, anchor), y.dtype)

    @tf.custom_gradient
    def _solve(y, kernel):
        x = _solve_loop(y, kernel, anchor, order)

        def grad(gx):
            gy = reverse_all(_solve_loop(reverse_all(gx), adjoint_kernel(kernel), anchor, order))
            with tf.GradientTape() as tape:
                tape.watch(kernel)
                y_again = masked_conv(tf.stop_gradient(x), kernel, anchor)
            gk = -tape.gradient(y_again, kernel, output_gradients=gy) * grad_mask
            return gy, gk

        return x, grad

    return _solve(y, kernel)
