"""iUNet's learnable invertible downsampling: a per-channel orthogonal stride-f convolution."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfinv.core.invertible_layer import InvertibleLayer, batch_log_det
from tfinv.ops import orthogonal
from tfinv.ops.space_to_depth import check_divisible, depth_to_space_shape, space_to_depth_shape

INITS = {"haar": orthogonal.haar_matrix, "squeeze": orthogonal.squeeze_matrix}


@keras.saving.register_keras_serializable(package="tfinv")
class InvertibleDownsampling(InvertibleLayer):
    """``z[., ., ., c f^2 + i] = sum_k Q_c[i, k] P_k(x_c)``: every channel ``c`` of ``x`` is
    convolved with stride ``f`` by its own ``f^2`` orthonormal ``f x f`` kernels (the rows of an
    orthogonal ``f^2 x f^2`` matrix ``Q_c``), where ``P_k(x_c)`` is the ``k``-th pixel (row-major)
    of each non-overlapping ``f x f`` block: a grouped strided convolution with an orthogonal
    kernel, ``C -> f^2 C`` channels.

    ``Q_c = Q_0 R(theta_c)``: ``Q_0`` the initialisation (``"haar"``: the 2D Haar wavelet
    transform of each block, low-pass first; ``"squeeze"``: the identity, i.e. pixel shuffle /
    space-to-depth) and ``R`` a learned rotation parameterised by ``method``: ``"cayley"``
    (``R = (I + A)^-1 (I - A)``), ``"exp"`` (``R = exp(A)``, a fixed-length series), with ``A``
    the skew-symmetric part of ``theta_c`` (``theta = 0`` at initialisation, so ``R = I``), or
    ``"householder"`` (``R = -H_1 ... H_{f^2}``, the reflections' vectors the rows of
    ``theta_c``, initialised to the axes so that ``R = I``).

    Inverse: the transposed convolution, ``P_k(x_c) = sum_i Q_c[i, k] z_c,i`` (``Q^-1 = Q^T``,
    parameter-only).
    Log-det: 0 (orthogonal), with the batch shape.
    Shapes: ``(B, H, W, C) -> (B, H/f, W/f, f^2 C)``, H and W divisible by ``f``; log-det ``(B,)``.

    Where this differs from the paper: the reference code parameterises ``Q_c`` directly and sets
    its initial value from the chosen initialisation; here the initialisation ``Q_0`` is fixed
    and the learned part is a rotation starting at ``I`` (the same set of matrices for
    ``"householder"``; for ``"cayley"`` and ``"exp"`` the matrices of determinant ``det Q_0``).
    `tfinv.layers.OrthogonalDownsampling` is the other form: one rotation mixing all ``f^2 C``
    channels.

    Args:
        factor: stride ``f`` (a power of 2 for ``init="haar"``).
        method: ``"cayley"``, ``"exp"`` or ``"householder"``.
        init: ``"haar"`` or ``"squeeze"``.
        learnable: train the rotations (``False``: a fixed Haar or squeeze downsampling).

    References: Etmann, Ke & Schönlieb, "iUNets: Fully invertible U-Nets with Learnable Up- and
    Downsampling", arXiv:2005.05220, §3.1 (orthogonal strided convolutions); reference code
    cetmann/iunets.
    """

    event_ndims = 3
    full_precision = True  # the Cayley solve has no half-precision kernel

    def __init__(self, factor: int = 2, method: str = "cayley", init: str = "haar", learnable: bool = True,
                 **kwargs):
        super().__init__(**kwargs)
        if int(factor) < 2:
            raise ValueError(f"{type(self).__name__} factor must be >= 2, got {factor}")
        if method not in orthogonal.METHODS:
            raise ValueError(f"{type(self).__name__} method must be one of {orthogonal.METHODS}, got {method!r}")
        if init not in INITS:
            raise ValueError(f"{type(self).__name__} init must be one of {sorted(INITS)}, got {init!r}")
        self.factor = int(factor)
        self.method = method
        self.init = init
        self.learnable = bool(learnable)
        self._initial = INITS[init](self.factor)  # checks the factor for "haar"

    # ------------------------------------------------------------- shapes (upsampling swaps them)
    def _low_channels(self) -> int:
        return self.input_event_shape[-1]

    def _check_input(self, shape):
        height, width, _ = shape[-3:]
        check_divisible(f"{type(self).__name__} '{self.name}'", height, width, self.factor)

    def build(self, input_shape):
        self._check_input(self.input_event_shape)
        channels = self._low_channels()
        size = self.factor**2
        init = (np.tile(np.eye(size), (channels, 1, 1)) if self.method == "householder"
                else np.zeros((channels, size, size)))
        self.rotation_weight = self.add_weight(
            name="rotation_weight", shape=(channels, size, size),
            initializer=keras.initializers.Constant(init), trainable=self.learnable)
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return space_to_depth_shape(input_shape, self.factor)

    def compute_input_shape(self, output_shape):
        return depth_to_space_shape(output_shape, self.factor)

    # ------------------------------------------------------------- maps
    def kernel_matrices(self) -> tf.Tensor:
        """The orthogonal ``Q_c``, shape ``(C, f^2, f^2)`` (output index first)."""
        # float64 on the (tiny, parameter-only) matrices: the exponential's squarings in float32
        # leave |det Q| - 1 ~ 1e-6 per matrix, a visible log-det error summed over the pixels
        raw = tf.cast(self.rotation_weight, tf.float64)
        rotation = orthogonal.orthogonal_matrix(raw, self.method)
        if self.method == "householder":
            rotation = -rotation
        q = tf.linalg.matmul(tf.constant(self._initial, tf.float64), rotation)
        return tf.cast(q, self.rotation_weight.dtype)

    def channel_matrix(self) -> tf.Tensor:
        """The block-diagonal ``(f^2 C, f^2 C)`` matrix of the map after space-to-depth: row
        ``c f^2 + i``, column ``k C + c`` (space-to-depth's channel order) holds ``Q_c[i, k]``.
        Parameter-only: an exporter folds it into a constant 1x1 convolution."""
        q = self.kernel_matrices()
        channels, size = q.shape[0], self.factor**2
        eye = tf.eye(channels, dtype=q.dtype)
        full = q[:, :, :, None] * eye[:, None, None, :]  # (c, i, k, c')
        return tf.reshape(full, [channels * size, size * channels])

    def _down(self, x):
        self._check_input(x.shape)
        # one 1x1 convolution on the space-to-depth blocks (a batched per-channel matmul gave
        # wrong autodiff Jacobians under oneDNN's vectorised batch matmul here)
        matrix = tf.cast(self.channel_matrix(), x.dtype)
        return orthogonal.mix_channels(tf.nn.space_to_depth(x, self.factor), matrix)

    def _up(self, z):
        matrix = tf.cast(self.channel_matrix(), z.dtype)
        return tf.nn.depth_to_space(orthogonal.mix_channels(z, tf.transpose(matrix)), self.factor)

    def _forward_and_log_det(self, x):
        return self._down(x), batch_log_det(0.0, x, self.event_ndims)

    def _inverse_and_log_det(self, z):
        return self._up(z), batch_log_det(0.0, z, self.event_ndims)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "method": self.method, "init": self.init,
                "learnable": self.learnable}
