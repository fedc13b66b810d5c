"""Residual Flow (Chen et al., arXiv:1906.02735): a multi-scale flow of invertible residual blocks.

DenseFlow (Grcić, Grubišić & Šegvić, "Densely connected normalizing flows", arXiv:2010.02502) and
the layer contract. Issue 16 lists DenseFlow's densely connected cross-unit coupling "if it fits
the contract"; as published, it does not, for three reasons:

* It is dimension-increasing. Before each invertible unit of a dense block (after the first) the
  representation is padded with ``G`` new channels, ``x_i = [u_{i-1}(x_{i-1}), e_i]``, so a block
  maps ``D`` numbers to ``D + (k - 1) G``. Its Jacobian is not square: there is no
  ``log |det J|``, ``forward_log_det_jacobian`` is undefined, and the "inverse" (run the units
  backwards and drop the padded channels) is a projection, so ``forward(inverse(z)) != z``.
* It is stochastic. The padding is noise, ``e_i = mu_i(h_i) + sigma_i(h_i) eta``,
  ``eta ~ N(0, I)``, with ``h_i`` the concatenation of the inputs of all previous units of the
  block (the cross-unit coupling). ``forward`` is then not a function of ``x``: two calls differ,
  and the contract's checks (log-det against ``slogdet`` of the autodiff Jacobian, a
  deterministic ONNX forward graph equal to TF, two builds identical) have nothing to compare.
* Its "log-det" is not a log-det. Each padding contributes ``-log q(e_i | h_i) =
  -log N(eta) + sum log sigma_i``, so ``log p(z) + sum log-det`` is a one-sample estimate of
  ``E_q[log p(x, e) - log q(e | x)]``, a variational lower bound on ``log p(x)`` whose gap is
  ``KL(q(e | x) || p(e | x))`` (augmented flows, VFlow). It is biased low, so it is neither an
  exact log-det nor an unbiased estimate of one, which is what the estimated-log-det contract
  (the residual layers here) needs. ``FlowModel.log_prob`` and ``bits_per_dim`` would silently
  become a bound.

Fitting DenseFlow would need a separate contract for stochastic, dimension-changing layers
(SurVAE flows, Nielsen et al., arXiv:2007.02731): a layer declares a stochastic forward and
returns a likelihood contribution instead of a log-det, and models report bounds
(importance-weighted for evaluation). tfinv does not have that contract.

The deterministic part does fit if the padding is data instead of noise: split the input into
``[x_0, d_1, ..., d_{k-1}]``, reveal ``d_i`` before unit ``i`` as
``e_i = mu_i(h_i) + sigma_i(h_i) d_i``, with the same densely connected conditioner input
``h_i``. The map is then a ``D -> D`` bijection with an exact log-det (sum of the units' log-dets
plus ``sum log sigma_i``). Its inverse runs the units backwards (which gives back every ``h_i``)
and then solves for each ``d_i``. This is `tfinv.layers.CrossUnitCoupling`.
"""

from __future__ import annotations

from typing import Sequence

import keras

from tfinv.blocks.invertible_sequential import InvertibleSequential
from tfinv.core.flow_model import FlowModel
from tfinv.layers.act_norm import ActNorm
from tfinv.models.glow import multiscale_shape_error
from tfinv.layers.invertible_residual_block import InvertibleResidualBlock
from tfinv.layers.logit_preprocess import LogitPreprocess
from tfinv.layers.squeeze import Squeeze


@keras.saving.register_keras_serializable(package="tfinv")
class ResidualFlow(FlowModel):
    """A small multi-scale Residual Flow: ``LogitPreprocess``, then per scale (a `Squeeze` before
    every scale but the first) ``blocks_per_level`` pairs of ``ActNorm`` and an invertible residual
    block, and a final ``ActNorm``.

    Forward: data -> latents of shape ``(H / 2^(L-1), W / 2^(L-1), C 4^(L-1))``.
    Inverse: every block by fixed-point iteration (an ONNX ``Loop`` in exported graphs).
    Log-det: exact for preprocessing and ActNorm; the blocks' is estimated in training (unbiased
    Russian roulette by default) and deterministic otherwise (``inference_terms`` series terms with
    the exact trace, or ``inference_probes`` fixed probes); see `tfinv.layers.bases.residual_layer`.
    Shapes: ``(B, H, W, C) -> (B, H', W', C')``; H and W divisible by ``2^(levels-1)``.

    Our variant: no factor-out between scales (Residual Flows' CIFAR model keeps every dimension
    too); no final classification head; the latent keeps its image shape.

    Args:
        input_shape: ``(H, W, C)``.
        levels: scales ``L``.
        blocks_per_level: residual blocks per scale.
        hidden_features: width of every block's ``g``.
        coefficient: Lipschitz coefficient ``c`` of every spectrally normalised map.
        activation: ``"lipswish"``, ``"clipswish"`` or ``"cpila"``.
        num_levels: pixel levels for `LogitPreprocess` (17 for digits); ``None``: no preprocessing.
        estimator, exact_terms, series_terms, neumann_gradient, memory_efficient, inference_terms,
        inference_probes, inverse_tolerance, max_inverse_iterations: the blocks' options
        (`ResidualLayer`).
        seed: seed of the blocks' kernels and probes.

    References: Chen, Behrmann, Duvenaud & Jacobsen, "Residual Flows for Invertible Generative
    Modeling", arXiv:1906.02735; Behrmann et al., "Invertible Residual Networks", arXiv:1811.00995.
    """

    def __init__(self, input_shape: Sequence[int] = (8, 8, 1), levels: int = 2, blocks_per_level: int = 4,
                 hidden_features: int = 32, coefficient: float = 0.97, activation: str = "lipswish",
                 num_levels: int | None = 17, estimator: str = "roulette", exact_terms: int = 2,
                 series_terms: int = 5, neumann_gradient: bool = True, memory_efficient: bool = False,
                 inference_terms: int = 20, inference_probes: int | None = None,
                 inverse_tolerance: float = 1e-6, max_inverse_iterations: int = 100, seed: int = 0,
                 **kwargs):
        name = type(self).__name__
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 3:
            raise ValueError(f"{name} needs input_shape (H, W, C), got {tuple(input_shape)}")
        if int(levels) < 1 or int(blocks_per_level) < 1:
            raise ValueError(f"{name} needs levels >= 1 and blocks_per_level >= 1, got {levels}, {blocks_per_level}")
        factor = 2 ** (int(levels) - 1)
        if shape[0] % factor or shape[1] % factor:
            raise ValueError(multiscale_shape_error(name, int(levels), factor, shape[0], shape[1]))
        block_options = dict(
            coefficient=coefficient, estimator=estimator, exact_terms=int(exact_terms),
            series_terms=int(series_terms), neumann_gradient=bool(neumann_gradient),
            memory_efficient=bool(memory_efficient), inference_terms=int(inference_terms),
            inference_probes=None if inference_probes is None else int(inference_probes),
            inverse_tolerance=float(inverse_tolerance), max_inverse_iterations=int(max_inverse_iterations))
        extras = self._block_extras(kwargs)
        steps = [] if num_levels is None else [LogitPreprocess(int(num_levels), name="preprocess")]
        for level in range(int(levels)):
            if level:
                steps.append(Squeeze(name=f"squeeze_{level}"))
            for block in range(int(blocks_per_level)):
                index = level * int(blocks_per_level) + block
                steps.append(ActNorm(name=f"act_norm_{index}"))
                steps.append(self._make_block(index, int(seed) + 100 * index, block_options,
                                              hidden_features=int(hidden_features), activation=activation,
                                              **extras))
        steps.append(ActNorm(name="act_norm_out"))
        kwargs.pop("layers", None)
        super().__init__(steps, input_shape=shape, **kwargs)
        self.levels = int(levels)
        self.blocks_per_level = int(blocks_per_level)
        self.hidden_features = int(hidden_features)
        self.activation = activation
        self.num_levels = None if num_levels is None else int(num_levels)
        self.block_options = block_options
        self.seed = int(seed)

    @staticmethod
    def _block_extras(kwargs: dict) -> dict:
        """Pops subclass-specific block arguments from ``kwargs`` (none here)."""
        return {}

    @staticmethod
    def _make_block(index: int, seed: int, options: dict, hidden_features: int, activation: str):
        return InvertibleResidualBlock(hidden_features, activation=activation, seed=seed,
                                       name=f"block_{index}", **options)

    @property
    def residual_blocks(self):
        return [s for s in self.flow.steps if hasattr(s, "refresh_spectral_norm")]

    def refresh_spectral_norm(self, iterations: int = 100) -> None:
        """Re-converges every block's power iterations (after assigning weights by hand)."""
        for block in self.residual_blocks:
            block.refresh_spectral_norm(iterations)

    def check_lipschitz(self) -> list[float]:
        """Every block's `check_lipschitz` (raises ``ValueError`` if one exceeds ``c``)."""
        return [block.check_lipschitz() for block in self.residual_blocks]

    def get_config(self):
        options = dict(self.block_options)
        return {**self._model_config(), "levels": self.levels, "blocks_per_level": self.blocks_per_level,
                "hidden_features": self.hidden_features, "activation": self.activation,
                "num_levels": self.num_levels, "seed": self.seed, **options}
