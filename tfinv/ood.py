"""Out-of-distribution scores of a flow: log-likelihood, typicality, complexity-corrected likelihood.

Every score is "higher = more in-distribution", so ``auroc(score(in), score(out))`` is the
probability that an in-distribution example outranks an out-of-distribution one (1 = perfect
detection, 0.5 = chance, below 0.5 = the flow prefers the OOD data — the failure Nalisnick et al.
and Kirichenko et al. document).

* `log_likelihood_scores`: ``log p(x)`` (nats).
* `TypicalityTest` (Nalisnick et al., arXiv:1906.02994): the entropy ``H_hat = -mean log p`` of
  held-out in-distribution data; a batch of ``M`` inputs is flagged when
  ``|-mean_batch log p - H_hat| > epsilon``, ``epsilon`` the ``1 - alpha`` quantile of that statistic
  over bootstrap batches of in-distribution data. Per example (``M = 1``) the score is
  ``-|-log p(x) - H_hat|``.
* `complexity_corrected_scores` (Serrà et al., "Input Complexity and Out-of-Distribution Detection
  with Likelihood-based Generative Models", arXiv:1909.11480): their OOD score is
  ``S(x) = -log2 p(x) - L(x)``, ``L(x)`` the length in bits of a lossless compression of ``x``; we
  return ``-S(x) = log2 p(x) + L(x)``. Our variant compresses with zlib (deflate, level 9; PNG's
  compressor without PNG's row filters) instead of PNG/FLIF.
* `auroc`: the Mann-Whitney statistic with ties counted one half.
* `bottleneck_glow`: Kirichenko et al.'s remedy: a Glow whose coupling conditioners pass through
  a low-dimensional bottleneck (`tfinv.nets.BottleneckConvNet`), so they cannot just copy local
  pixel correlations; the likelihood of such a flow is the better OOD score they report.

References: Nalisnick et al., arXiv:1906.02994; Serrà et al., arXiv:1909.11480; Kirichenko,
Izmailov & Wilson, arXiv:2006.08545.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np

__all__ = [
    "SYNTHETIC_OOD_SETS",
    "TypicalityTest",
    "auroc",
    "bottleneck_glow",
    "check_images",
    "complexity_bits",
    "complexity_corrected_scores",
    "log_likelihood_scores",
    "score_histogram_image",
    "synthetic_ood_set",
]

#: OOD sets built from in-distribution integer images (`synthetic_ood_set`).
SYNTHETIC_OOD_SETS = ("inverted", "uniform_noise", "constant", "shuffled")


def check_images(model: Any, x: Any, what: str = "x") -> np.ndarray:
    """``x`` as float32 of shape ``(N,) + model.data_shape``, else a ``ValueError`` naming it."""
    array = np.asarray(x)
    expected = tuple(model.data_shape)
    if array.ndim != len(expected) + 1 or tuple(array.shape[1:]) != expected:
        raise ValueError(
            f"{what} must have shape (N, {', '.join(map(str, expected))}) like the model's data, got {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{what} must be numeric, got dtype {array.dtype}")
    return array.astype(np.float32)


def log_likelihood_scores(model: Any, x: Any, batch_size: int = 256, what: str = "x") -> np.ndarray:
    """``log p(x)`` in nats per example, float64 ``(N,)`` (``model`` a `tfinv.FlowModel`)."""
    x = check_images(model, x, what)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = [model.log_prob(x[i:i + int(batch_size)]).numpy() for i in range(0, len(x), int(batch_size))]
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0,), np.float64)


def complexity_bits(x: Any, num_levels: int) -> np.ndarray:
    """``L(x)``: bits of the zlib (level 9) compression of each image's integer levels, ``(N,)``.

    ``x`` holds levels (or dequantised ``levels + U[0, 1)``) in ``[0, num_levels)``; they are
    floored, clipped and stored one byte per value (``num_levels <= 256``).
    """
    if not 2 <= int(num_levels) <= 256:
        raise ValueError(f"complexity_bits needs 2 <= num_levels <= 256 (one byte per value), got {num_levels}")
    array = np.asarray(x)
    if array.ndim < 2:
        raise ValueError(f"complexity_bits needs a batch of images (N, ...), got shape {array.shape}")
    levels = np.clip(np.floor(array), 0, int(num_levels) - 1).astype(np.uint8)
    return np.array([8.0 * len(zlib.compress(image.tobytes(), 9)) for image in levels], np.float64)


def complexity_corrected_scores(model: Any, x: Any, num_levels: int, batch_size: int = 256,
                                what: str = "x") -> np.ndarray:
    """``log2 p(x) + L(x)`` per example (bits): minus Serrà et al.'s ``S(x)``; higher = in-distribution."""
    log_p = log_likelihood_scores(model, x, batch_size, what)
    return log_p / math.log(2.0) + complexity_bits(x, num_levels)


class TypicalityTest:
    """Nalisnick et al.'s typicality test of a batch of ``M`` inputs against the model's typical set.

    ``fit(entropy_x, bootstrap_x)``: ``H_hat = -mean log p(entropy_x)`` and the threshold
    ``epsilon``: the ``1 - alpha`` quantile of ``|-mean log p(B) - H_hat|`` over ``num_bootstrap``
    batches ``B`` of ``M`` examples drawn with replacement from ``bootstrap_x`` (held-out
    in-distribution data, kept apart from ``entropy_x`` as in the paper). A batch is OOD when its
    statistic exceeds ``epsilon``.

    Args:
        model: a `tfinv.FlowModel`.
        batch_size: evaluation batch size (memory only, not ``M``).
    """

    def __init__(self, model: Any, batch_size: int = 256):
        self.model = model
        self.batch_size = int(batch_size)
        self.entropy: float | None = None
        self.threshold: float | None = None
        self.test_batch_size: int | None = None
        self.bootstrap_statistics: np.ndarray | None = None

    def fit(self, entropy_x: Any, bootstrap_x: Any, test_batch_size: int = 2, num_bootstrap: int = 1000,
            alpha: float = 0.01, seed: int = 0) -> "TypicalityTest":
        if int(test_batch_size) < 1:
            raise ValueError(f"test_batch_size M must be >= 1, got {test_batch_size}")
        if not 0.0 < float(alpha) < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        if int(num_bootstrap) < 1:
            raise ValueError(f"num_bootstrap must be >= 1, got {num_bootstrap}")
        log_p = log_likelihood_scores(self.model, entropy_x, self.batch_size, "entropy_x")
        if len(log_p) == 0:
            raise ValueError("entropy_x must hold at least one example")
        self.entropy = float(-np.mean(log_p))
        held_out = log_likelihood_scores(self.model, bootstrap_x, self.batch_size, "bootstrap_x")
        if len(held_out) == 0:
            raise ValueError("bootstrap_x must hold at least one example")
        self.test_batch_size = int(test_batch_size)
        self.bootstrap_statistics = self._statistics_of(held_out, int(num_bootstrap), seed, replace=True)
        self.threshold = float(np.quantile(self.bootstrap_statistics, 1.0 - float(alpha)))
        return self

    def _require_fit(self) -> None:
        if self.entropy is None:
            raise ValueError("TypicalityTest is not fitted: call fit(entropy_x, bootstrap_x) first")

    def _statistics_of(self, log_p: np.ndarray, num_batches: int, seed: int, replace: bool) -> np.ndarray:
        m = self.test_batch_size
        rng = np.random.default_rng(seed)
        if not replace and len(log_p) < m:
            raise ValueError(f"need at least M = {m} examples to form a batch, got {len(log_p)}")
        picks = (rng.integers(0, len(log_p), (num_batches, m)) if replace
                 else np.stack([rng.permutation(len(log_p))[:m] for _ in range(num_batches)]))
        return np.abs(-log_p[picks].mean(-1) - self.entropy)

    def statistic(self, x: Any) -> float:
        """``|-mean log p(x) - H_hat|`` of one batch ``x`` (any size)."""
        self._require_fit()
        return float(abs(-np.mean(log_likelihood_scores(self.model, x, self.batch_size)) - self.entropy))

    def batch_statistics(self, x: Any, num_batches: int = 200, seed: int = 0) -> np.ndarray:
        """The statistic of ``num_batches`` random batches of ``M`` examples of ``x`` (no repeats within a batch)."""
        self._require_fit()
        return self._statistics_of(log_likelihood_scores(self.model, x, self.batch_size), int(num_batches),
                                   seed, replace=False)

    def batch_scores(self, x: Any, num_batches: int = 200, seed: int = 0) -> np.ndarray:
        """Minus `batch_statistics` (higher = more typical), for `auroc`."""
        return -self.batch_statistics(x, num_batches, seed)

    def is_ood(self, x: Any) -> bool:
        """Whether the batch ``x`` fails the test at level ``alpha``."""
        return self.statistic(x) > self.threshold

    def example_scores(self, x: Any) -> np.ndarray:
        """Per-example typicality (``M = 1``): ``-|-log p(x) - H_hat|``; higher = more typical."""
        self._require_fit()
        return -np.abs(-log_likelihood_scores(self.model, x, self.batch_size) - self.entropy)


def auroc(in_scores: Any, out_scores: Any) -> float:
    """``P(s_in > s_out) + P(s_in = s_out) / 2``: the area under the ROC curve, by ranks.

    Equals ``(R_in - n_in (n_in + 1) / 2) / (n_in n_out)``, ``R_in`` the sum of the in-distribution
    scores' ranks in the pooled sample (ties get their average rank).
    """
    a, b = np.asarray(in_scores, np.float64), np.asarray(out_scores, np.float64)
    if a.ndim != 1 or b.ndim != 1 or a.size == 0 or b.size == 0:
        raise ValueError(f"auroc needs two non-empty 1-D score arrays, got shapes {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("auroc needs finite scores (got NaN or Inf)")
    pooled = np.concatenate([a, b])
    values, inverse, counts = np.unique(pooled, return_inverse=True, return_counts=True)
    first_rank = np.cumsum(counts) - counts + 1  # ranks start at 1
    average_rank = first_rank + (counts - 1) / 2.0
    rank_sum_in = float(np.sum(average_rank[inverse[: a.size]]))
    return (rank_sum_in - a.size * (a.size + 1) / 2.0) / (a.size * b.size)


def synthetic_ood_set(name: str, images: Any, num_levels: int, seed: int = 0) -> np.ndarray:
    """An OOD set shaped like ``images`` (integer levels in ``[0, num_levels)``, ``(N, H, W, C)``).

    ``inverted``: ``num_levels - 1 - x``; ``uniform_noise``: i.i.d. uniform levels; ``constant``:
    one uniform random level per image; ``shuffled``: each image's pixels (all of ``H W C``) under
    its own random permutation. Seeded.
    """
    if name not in SYNTHETIC_OOD_SETS:
        raise ValueError(f"unknown synthetic OOD set {name!r}: expected one of {list(SYNTHETIC_OOD_SETS)}")
    x = np.asarray(images)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"synthetic_ood_set needs a non-empty batch of images (N, ...), got shape {x.shape}")
    levels = int(num_levels)
    rng = np.random.default_rng(seed)
    if name == "inverted":
        out = levels - 1 - x.astype(np.int64)
    elif name == "uniform_noise":
        out = rng.integers(0, levels, x.shape)
    elif name == "constant":
        out = np.broadcast_to(rng.integers(0, levels, (len(x),) + (1,) * (x.ndim - 1)), x.shape)
    else:
        flat = x.reshape(len(x), -1)
        out = np.stack([row[rng.permutation(flat.shape[1])] for row in flat]).reshape(x.shape)
    return np.ascontiguousarray(out).astype(x.dtype if np.issubdtype(x.dtype, np.integer) else np.int64)


def score_histogram_image(groups: dict[str, dict[str, np.ndarray]], bins: int = 40, panel: tuple[int, int] = (90, 240),
                          ) -> np.ndarray:
    """Histograms of scores as one RGB uint8 picture (no plotting library): one panel per score.

    ``groups[score][set_name]`` are the per-example scores of one set; in each panel (shared bins
    over the panel's sets) the first set is drawn in blue, the others in red, orange, green, ...
    as outlines of their normalised histograms (each set's highest bin fills the panel).
    Returns ``(rows, width, 3)``.
    """
    colours = np.array([[40, 90, 220], [220, 50, 40], [240, 150, 20], [30, 160, 60], [150, 60, 200],
                        [90, 90, 90], [0, 170, 170]], np.uint8)
    height, width = int(panel[0]), int(panel[1])
    panels = []
    for sets in groups.values():
        canvas = np.full((height, width, 3), 255, np.uint8)
        finite = [np.asarray(v, np.float64)[np.isfinite(v)] for v in sets.values()]
        finite = [v for v in finite if v.size]
        if finite:
            low = min(float(v.min()) for v in finite)
            high = max(float(v.max()) for v in finite)
            edges = np.linspace(low, high if high > low else low + 1.0, int(bins) + 1)
            for index, values in enumerate(finite):
                counts, _ = np.histogram(values, edges)
                tops = (height - 1 - np.round((height - 2) * counts / max(counts.max(), 1))).astype(int)
                colour = colours[index % len(colours)]
                for b in range(int(bins)):
                    left, right = b * width // int(bins), (b + 1) * width // int(bins)
                    canvas[tops[b], left:right] = colour  # top of the bar
                    if counts[b]:
                        canvas[tops[b]:, left] = colour  # its left side
        canvas[-1, :] = 0
        panels.append(canvas)
        panels.append(np.full((4, width, 3), 200, np.uint8))
    return np.concatenate(panels[:-1], 0) if panels else np.full((height, width, 3), 255, np.uint8)


def bottleneck_glow(input_shape: Any = (8, 8, 1), levels: int = 2, steps_per_level: int = 2, hidden_channels: int = 32,
                    bottleneck: int = 16, num_levels: int | None = 17, seed: int = 0, name: str = "bottleneck_glow",
                    **kwargs: Any):
    """A multi-scale Glow (`tfinv.models.glow.glow_layers`) whose every coupling conditioner is a
    `tfinv.nets.BottleneckConvNet` with a ``bottleneck``-dimensional code: Kirichenko et al.'s
    remedy for likelihood-based OOD detection (their st-networks with a bottleneck).

    Returns a `tfinv.FlowModel` (standard normal base); ``**kwargs`` go to `FlowModel`.
    Shapes: ``(B, H, W, C) -> (B, H W C)``. References: arXiv:2006.08545, §7.
    """
    import keras

    from tfinv.core.flow_model import FlowModel
    from tfinv.models.glow import glow_layers
    from tfinv.nets.bottleneck_conv_net import BottleneckConvNet

    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or shape[0] % 2**int(levels) or shape[1] % 2**int(levels):
        raise ValueError(f"bottleneck_glow needs input_shape (H, W, C) with H, W divisible by {2**int(levels)}, "
                         f"got {shape}")
    template = keras.saving.serialize_keras_object(
        BottleneckConvNet(hidden_channels, bottleneck, out_channels=None, name="conditioner"))
    layers = glow_layers(int(levels), int(steps_per_level), int(hidden_channels), "affine", num_levels, int(seed),
                         conditioner=template)
    return FlowModel(layers, input_shape=shape, name=name, **kwargs)
