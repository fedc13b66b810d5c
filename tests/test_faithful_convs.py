"""The paper-faithful convolution layers of issue 18 beyond the contract harness (their cases run
in tests/test_contract.py): receptive fields measured from the Jacobian, the grouped/oriented
structure of FInC and Inverse-Flow, and Glow with each as its linear layer."""

import numpy as np
import pytest
import tensorflow as tf

from tfinv.blocks.glow_step import LINEAR_LAYERS, GlowStep
from tfinv.layers.emerging_conv import EmergingConv
from tfinv.layers.inv_conv1x1 import InvConv1x1
from tfinv.layers.raster_emerging_conv import RasterEmergingConv
from tfinv.models import Glow
from tfinv.testing import contract
from tfinv.testing.cases import Case


def _support(layer, shape, pixel):
    """Input pixels that output ``pixel`` (all channels) depends on: rows of a 0/1 map."""
    built, x = Case("rf", lambda: layer, shape, perturb=0.3).build(seed=1)
    with tf.GradientTape() as tape:
        tape.watch(x)
        z = built.forward_and_log_det(x)[0]
        picked = tf.reduce_sum(z[0, pixel[0], pixel[1], :])
    grad = tape.gradient(picked, x).numpy()[0]
    # a perturbed tap could be tiny but not exactly 0; structural zeros are exactly 0
    return (np.abs(grad).sum(-1) > 0).astype(int)


def test_emerging_receptive_field_is_the_k_by_k_window():
    for k, size in ((3, 7), (5, 9)):
        support = _support(EmergingConv(kernel_size=k, seed=1), (1, size, size, 2), (size // 2, size // 2))
        expected = np.zeros((size, size), int)
        lo, hi = size // 2 - k // 2, size // 2 + k // 2 + 1
        expected[lo:hi, lo:hi] = 1
        np.testing.assert_array_equal(support, expected)


def test_raster_emerging_receptive_field_is_13_pixels_in_3_by_5():
    support = _support(RasterEmergingConv(kernel_size=3, seed=1), (1, 7, 7, 2), (3, 3))
    assert support.sum() == 13
    rows, cols = np.nonzero(support)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (2, 4, 1, 5)
    np.testing.assert_array_equal(support[2:5, 1:6], [[0, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])


def test_emerging_square_masks_and_bias():
    layer, x = Case("e", lambda: EmergingConv(seed=1), (2, 5, 5, 3)).build()
    k1, k2 = layer.kernels()
    assert k1.shape == k2.shape == (2, 2, 3, 3)  # (k + 1) / 2 squares for k = 3
    centre = k1.numpy()[1, 1]  # the corner anchor (TL conv read through the flips)
    assert np.allclose(np.tril(centre, -1), 0) and not np.allclose(np.triu(centre, 1), 0)
    # the bias is a plain shift of the output
    z = layer.forward_and_log_det(x)[0].numpy()
    layer.bias.assign(layer.bias.numpy() + 1.5)
    np.testing.assert_allclose(layer.forward_and_log_det(x)[0].numpy(), z + 1.5, rtol=0, atol=1e-5)


def test_glow_emerging_step_is_1x1_then_emerging():
    step = GlowStep(hidden_channels=8, linear="emerging")
    step.build((None, 4, 4, 4))
    mixer = step.steps[1]
    assert [type(layer) for layer in mixer.steps] == [InvConv1x1, EmergingConv]


@pytest.mark.parametrize("name", ["emerging", "raster_emerging"])
def test_glow_with_faithful_linear(name):
    assert name in LINEAR_LAYERS
    case = Case(f"Glow-{name}",
                lambda: Glow((8, 8, 1), levels=2, steps_per_level=1, hidden_channels=8,
                             linear=name, num_levels=None), (2, 8, 8, 1), perturb=0.05)
    model, x = case.build()
    contract.check_round_trip(model, x, 1e-5)


def test_finc_groups_are_independent_and_oriented():
    from tfinv.layers.f_in_c_conv import FInCConv

    layer, x = Case("f", lambda: FInCConv(seed=3), (1, 7, 7, 8), perturb=0.3).build(seed=1)
    # expected window of output (3, 3) per group: TL reads up-left, TR up-right, BL down-left, BR down-right
    windows = {0: (slice(1, 4), slice(1, 4)), 1: (slice(1, 4), slice(3, 6)),
               2: (slice(3, 6), slice(1, 4)), 3: (slice(3, 6), slice(3, 6))}
    for group, (rows, cols) in windows.items():
        with tf.GradientTape() as tape:
            tape.watch(x)
            z = layer.forward_and_log_det(x)[0]
            picked = tf.reduce_sum(z[0, 3, 3, 2 * group : 2 * group + 2])
        grad = np.abs(tape.gradient(picked, x).numpy()[0])
        outside = grad.copy()
        outside[rows, cols, 2 * group : 2 * group + 2] = 0
        assert outside.max() == 0, f"group {group} reads outside its corner window or group"
        assert (grad[rows, cols, 2 * group : 2 * group + 2].sum(-1) > 0).all()
    # unit diagonal: volume preserving
    assert np.all(layer.forward_and_log_det(x)[1].numpy() == 0)


def test_inverse_flow_unit_samples_with_convolutions_only():
    from tfinv.export.onnx import prepare
    from tfinv.layers.inverse_flow_unit import InverseFlowUnit

    layer, x = Case("i", lambda: InverseFlowUnit(seed=4), (2, 5, 4, 3)).build()
    z = layer.forward_and_log_det(x)[0].numpy()
    _, forward = prepare(layer, "forward", test_input=x.numpy())
    _, inverse = prepare(layer, "inverse", test_input=z)
    # the forward map is the solve: row by row by default (unrolled MatMul steps, no Loop)
    assert layer.order == "rows" and "MatMul" in forward.op_types, forward.op_types
    assert "Loop" not in inverse.op_types and "Conv" in inverse.op_types, inverse.op_types
    # all four corners: a latent pixel depends on the whole image
    with tf.GradientTape() as tape:
        tape.watch(x)
        picked = tf.reduce_sum(layer.forward_and_log_det(x)[0][0, 2, 2])
    assert (np.abs(tape.gradient(picked, x).numpy()[0]).sum(-1) > 0).all()


@pytest.mark.parametrize("name", ["finc", "cinc_chain", "inverse_flow"])
def test_glow_with_finc_and_inverse_flow(name):
    case = Case(f"Glow-{name}",
                lambda: Glow((8, 8, 1), levels=2, steps_per_level=1, hidden_channels=8,
                             linear=name, num_levels=None), (2, 8, 8, 1), perturb=0.05)
    model, x = case.build()
    contract.check_round_trip(model, x, 1e-5)


def test_emerging_keeps_its_squares_on_2x2_images():
    layer = EmergingConv(fit_kernel_to_image=True)
    layer.build((None, 2, 2, 8))  # digits Glow's second level
    assert [k.shape[:2] for k in layer.kernels()] == [(2, 2), (2, 2)]
    with pytest.raises(ValueError, match="H >= 2"):
        EmergingConv().build((None, 1, 4, 2))
