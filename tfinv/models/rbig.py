"""Rotation-based iterative Gaussianization (RBIG) and convolutional RBIG, fitted greedily.

RBIG alternates a marginal Gaussianization (`tfinv.layers.MarginalGaussianization`, fitted on the
data) and a rotation (`tfinv.layers.OrthonormalConv`), each fitted once on the data as it comes
out of the previous layers and never revisited. The result is an ordinary `tfinv.FlowModel`:
``log_prob``, ``bits_per_dim``, ``sample``, export.

Multi-information (total correlation) ``I(x) = sum_d H(x_d) - H(x)``: marginal maps leave it
unchanged and an orthogonal map ``R`` keeps ``H``, so an iteration that turns ``y`` (standard
normal marginals) into ``w = R y`` lowers it by

    Delta I = sum_d H(y_d) - sum_d H(w_d)    (= D H(N(0, 1)) - sum_d H(w_d) for exact marginals)

(the next marginal Gaussianization then removes the marginal non-Gaussianity of ``w``). Once the
data are Gaussianized, ``I(x) = sum_k Delta I_k``: RBIG's multi-information estimate. Both sums
are histogram estimates (`tfinv.ops.gaussianization.histogram_entropy`) on the fitted samples,
so the estimator's bias largely cancels in the difference (as in RBIG's reference code).

References: Laparra, Camps-Valls & Malo, "Iterative Gaussianization: from ICA to Random
Rotations", IEEE TNN 2011 (arXiv:1602.00229); Laparra, Hepburn, Johnson & Malo, "Orthonormal
Convolutions for the Rotation Based Iterative Gaussianization", ICIP 2022 (arXiv:2206.03860).
"""

from __future__ import annotations

import dataclasses
import sys

import keras
import numpy as np
import tensorflow as tf

from tfinv.core.flow_model import FlowModel
from tfinv.core.invertible_sequential import InvertibleSequential
from tfinv.layers.marginal_gaussianization import MarginalGaussianization
from tfinv.layers.orthonormal_conv import OrthonormalConv
from tfinv.layers.squeeze import Squeeze
from tfinv.ops import fourier, gaussianization

ROTATIONS = ("pca", "random", "conv")


@dataclasses.dataclass
class RBIGResult:
    """What `fit_rbig` returns.

    Attributes:
        model: the fitted flow (data -> latent).
        reductions: ``Delta I`` of every iteration, nats.
        multi_information: their sum, nats (the estimate of ``I(x)``).
        orthonormality_errors: ``rotation="conv"``: each learned convolution's ``max |sigma - 1|``
            before it was projected onto the orthonormal ones (empty otherwise).
        noise_floor: `null_reduction` for the data's size: reductions of at most this magnitude
            are counted as 0 and count towards stopping.
        held_out_log_likelihood: with ``validation``: its mean log-likelihood (nats) after every
            fitted iteration, including those cut off.
    """

    model: FlowModel
    reductions: list[float]
    multi_information: float
    orthonormality_errors: list[float]
    noise_floor: float
    held_out_log_likelihood: list[float] = dataclasses.field(default_factory=list)


def null_reduction(n: int, dims: int, draws: int = 3, seed: int = 0) -> float:
    """The noise level of one iteration's ``Delta I`` estimate for ``n`` samples in ``dims``
    dimensions: the root mean square of the estimate on standard normal data (true reduction 0)
    under random rotations, over ``draws`` draws."""
    rng = np.random.default_rng(seed + 7)
    values = []
    for _ in range(draws):
        y = rng.standard_normal((n, dims))
        q, _ = np.linalg.qr(rng.standard_normal((dims, dims)))
        values.append(gaussianization.histogram_entropy(y).sum() - gaussianization.histogram_entropy(y @ q).sum())
    return float(np.sqrt(np.mean(np.square(values))))


class _Tracked:
    """Held-out data pushed through the layers as they are fitted, with its summed log-det."""

    def __init__(self, x: np.ndarray):
        self.data = tf.constant(x)
        self.log_det = np.zeros(len(x))

    def push(self, layer) -> float:
        """Applies ``layer``; returns the mean log-likelihood under a standard normal base."""
        self.data, log_det = layer.forward_and_log_det(self.data)
        self.log_det = self.log_det + log_det.numpy()
        flat = self.data.numpy().reshape(len(self.log_det), -1).astype(np.float64)
        log_base = -0.5 * np.sum(flat**2, axis=1) - 0.5 * flat.shape[1] * np.log(2.0 * np.pi)
        return float(np.mean(log_base + self.log_det))


def learn_orthonormal_conv(y: np.ndarray, kernel_size: int = 3, steps: int = 300, learning_rate: float = 0.01,
                           l1_activation: float = 0.0, batch_size: int = 256, seed: int = 0) -> np.ndarray:
    """A ``(k, k, C, C)`` kernel (centred taps) learned as convolutional RBIG does: minimise the
    reconstruction loss ``mean |K^T * (K * y) - y|^2 + l1_activation mean |K * y|`` of the
    convolution followed by its transpose (here both circular) by Adam from a random
    orthonormal-columns initialisation (``k^2 C x C``). The result is only approximately
    orthonormal: project it (`tfinv.ops.gaussianization.nearest_orthogonal_circular_kernel`)."""
    if kernel_size % 2 == 0:
        raise ValueError(f"learn_orthonormal_conv needs an odd kernel_size (centred taps), got {kernel_size}")
    channels = y.shape[-1]
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((kernel_size * kernel_size * channels, channels)))
    kernel = tf.Variable(q.reshape(kernel_size, kernel_size, channels, channels).astype(np.float32))
    optimizer = keras.optimizers.Adam(learning_rate)
    data = tf.constant(y, tf.float32)

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            code = fourier.periodic_conv2d(batch, kernel)
            # the transpose of a centred odd circular correlation: flipped taps, transposed blocks
            adjoint = tf.transpose(kernel[::-1, ::-1], [0, 1, 3, 2])
            back = fourier.periodic_conv2d(code, adjoint)
            loss = tf.reduce_mean(tf.square(back - batch)) + l1_activation * tf.reduce_mean(tf.abs(code))
        optimizer.apply_gradients([(tape.gradient(loss, kernel), kernel)])
        return loss

    n = int(data.shape[0])
    for _ in range(steps):
        index = rng.choice(n, size=min(batch_size, n), replace=False)
        step(tf.gather(data, index))
    return kernel.numpy().astype(np.float64)


def _rotation(y: np.ndarray, rotation: str, rng: np.random.Generator, kernel_size: int, conv_steps: int,
              conv_l1: float, seed: int) -> tuple[np.ndarray, float | None]:
    """The kernel of the next rotation for data ``y (N, H, W, C)``, and the conv's error before
    projection."""
    n, height, width, channels = y.shape
    if rotation == "pca":
        flat = y.reshape(n, channels)
        _, vectors = np.linalg.eigh(np.cov(flat, rowvar=False))
        return vectors[:, ::-1][None, None], None  # (1, 1, C_in, C_out): z = V^T y
    if rotation == "random":
        q, r = np.linalg.qr(rng.standard_normal((channels, channels)))
        return (q * np.sign(np.diag(r)))[None, None], None
    learned = learn_orthonormal_conv(y, kernel_size, steps=conv_steps, l1_activation=conv_l1, seed=seed)
    full = gaussianization.centred_to_cyclic_kernel(learned, height, width)
    return gaussianization.nearest_orthogonal_circular_kernel(full)


def fit_rbig(x: np.ndarray, rotation: str = "pca", max_layers: int = 50, tolerance: float = 1e-3,
             patience: int = 5, num_knots: int = 40, sharing: str = "element", conv_squeeze: int = 2,
             conv_kernel_size: int = 3, conv_steps: int = 300, conv_l1: float = 0.0, seed: int = 0,
             validation: np.ndarray | None = None, verbose: bool = False) -> RBIGResult:
    """Fits RBIG to images ``x (N, H, W, C)``: iterations of marginal Gaussianization then rotation
    until ``patience`` iterations in a row reduce the multi-information by less than
    ``tolerance`` nats (or by less than the estimator's noise level, `null_reduction`: such
    reductions are counted as 0), or ``max_layers`` iterations; a last marginal Gaussianization
    closes the flow. Returns the flow and the multi-information estimate (module docstring).

    Args:
        rotation: ``"pca"`` (RBIG's PCA: the image is first squeezed to ``(1, 1, HWC)``, so the
            rotation mixes every dimension; needs ``H == W``), ``"random"`` (random rotations of
            the same), or ``"conv"`` (convolutional RBIG: squeeze by ``conv_squeeze``, then
            orthonormal ``conv_kernel_size`` convolutions learned by reconstruction loss with
            ``conv_steps`` Adam steps and activation-L1 weight ``conv_l1``, projected onto the
            orthonormal circular convolutions).
        num_knots, sharing: of each `MarginalGaussianization`.
        validation: held-out images; if given, the stopping rule is instead ``patience``
            iterations without a better mean held-out log-likelihood (of the flow cut after the
            rotation, standard normal base), and the flow and its reductions are cut back to the
            best iteration (the per-iteration reductions measured on the fitted data keep
            growing as the marginals overfit, so without it ``max_layers`` decides).

    Where this differs from the papers: the marginals interpolate ``Phi^-1 o F`` (see
    `MarginalGaussianization`); the convolutions are circular and projected to exact
    orthonormality (so their log-det is 0; the projected kernel has full ``H x W`` support); the
    stopping rule is a tolerance with patience on the per-iteration reduction, or held-out
    likelihood with ``validation``; RBIG's ICA rotations are not implemented.
    """
    if rotation not in ROTATIONS:
        raise ValueError(f"fit_rbig rotation must be one of {ROTATIONS}, got {rotation!r}")
    x = np.asarray(x, np.float32)
    if x.ndim != 4:
        raise ValueError(f"fit_rbig needs images (N, H, W, C), got shape {x.shape}")
    n, height, width, _ = x.shape
    rng = np.random.default_rng(seed)
    layers, reductions, errors, scores = [], [], [], []
    if rotation in ("pca", "random") and height > 1:
        if height != width:
            raise ValueError(f"fit_rbig rotation={rotation!r} needs square images (squeezed to 1 x 1), "
                             f"got {x.shape[1:3]}")
        layers.append(Squeeze(factor=height))
    elif rotation == "conv" and conv_squeeze > 1:
        layers.append(Squeeze(factor=conv_squeeze))
    data = tf.constant(x)
    held_out = None if validation is None else _Tracked(np.asarray(validation, np.float32))
    for layer in layers:
        layer.build(tuple(data.shape))
        data = layer.forward_and_log_det(data)[0]
        if held_out is not None:
            held_out.push(layer)
    dims = int(np.prod(data.shape[1:]))
    floor = null_reduction(n, dims, seed=seed)
    quiet, best = 0, (-np.inf, 0, data)  # (held-out log-likelihood, iterations, data there)
    for k in range(max_layers):
        marginal = MarginalGaussianization(num_knots=num_knots, sharing=sharing, name=f"marginal_{k}")
        marginal.build(tuple(data.shape))
        y = marginal.initialize(data).numpy()
        kernel, error = _rotation(y, rotation, rng, conv_kernel_size, conv_steps, conv_l1, seed + k)
        rotate = OrthonormalConv(kernel=kernel, name=f"rotation_{k}")
        rotate.build(tuple(y.shape))
        data = rotate.forward_and_log_det(tf.constant(y))[0]
        w = data.numpy().reshape(n, dims)
        # the same estimator on both sides: its bias (binning, finite N) cancels in the difference
        reduction = float(gaussianization.histogram_entropy(y.reshape(n, dims)).sum()
                          - gaussianization.histogram_entropy(w).sum())
        # below the estimator's noise level (RBIG's reference does the same): no reduction
        reductions.append(reduction if abs(reduction) > floor else 0.0)
        layers += [marginal, rotate]
        if error is not None:
            errors.append(error)
        if verbose:
            print(f"rbig {rotation} iteration {k + 1}: Delta I = {reduction:.4f} nats", file=sys.stderr, flush=True)
        if held_out is not None:
            held_out.push(marginal)
            score = held_out.push(rotate)
            scores.append(score)
            if score > best[0]:
                best, quiet = (score, k + 1, data), 0
            else:
                quiet += 1
        else:
            quiet = quiet + 1 if abs(reduction) < max(tolerance, floor) else 0
        if quiet >= patience:
            break
    if held_out is not None:  # keep the flow where the held-out likelihood peaked
        depth, data = best[1], best[2]
        layers = layers[: len(layers) - 2 * (len(reductions) - depth)]
        reductions, errors = reductions[:depth], errors[:depth]
    last = MarginalGaussianization(num_knots=num_knots, sharing=sharing, name="marginal_out")
    last.build(tuple(data.shape))
    last.initialize(data)
    layers.append(last)
    flow = InvertibleSequential(layers, event_ndims=3, name=f"rbig_{rotation}")
    model = FlowModel(flow, input_shape=x.shape[1:])
    return RBIGResult(model, reductions, float(np.sum(reductions)), errors, floor, scores)

