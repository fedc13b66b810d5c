"""A stack of reversible blocks trained without storing activations."""

from __future__ import annotations

import functools
from typing import Sequence

import keras
import tensorflow as tf

# XLA's optimization barrier (what JAX's remat uses to pin its recomputation in place) and the
# XLA-context test; neither has a public form.
from tensorflow.compiler.tf2xla.python import xla as tf2xla
# The tape pause `tf.recompute_grad` uses (no public form).
from tensorflow.python.eager import record
from tensorflow.python.ops import control_flow_util

from tfinv.core.invertible_sequential import InvertibleSequential
from tfinv.core.export_mode import is_exporting
from tfinv.core.invertible_layer import InvertibleLayer
from tfinv.layers.bases.reversible_block import add_gradients, vjp_by_recomputation


@keras.saving.register_keras_serializable(package="tfinv")
class ReversibleStack(InvertibleSequential):
    """``z = f_n(... f_1(x))`` for invertible blocks ``f_i``, with memory-efficient backprop.

    Inverse: ``x = f_1^-1(... f_n^-1(z))``. Log-det: the sum of the blocks' log-dets (0 for the
    volume-preserving `RevViTBlock`, `RevResBlock`, `IRevNetBlock`), with the batch shape.
    Shapes: as the blocks (they may change the event shape, e.g. ``IRevNetBlock(stride=2)``).

    Memory-efficient backprop (``memory_efficient=True``): the forward pass runs under
    ``tf.custom_gradient`` (``variables=`` form) with the tape paused, so no per-block activation
    is kept for the backward pass; only the stack's output is. The backward pass walks the blocks
    from the top: each block rebuilds its input from its output and recomputes itself under a
    tape to give the vector-Jacobian product for its input and weights
    (``block.reconstruct_and_vjp``, see `tfinv.layers.bases.reversible_block`; any other
    `InvertibleLayer` is handled by inverting it and recomputing its forward). The activation
    memory of training is then that of one block, whatever the depth, at the price of about one
    extra forward pass. Gradients equal ordinary autodiff up to the float32 rounding of the
    reconstruction (~1e-6 relative for well-conditioned blocks). ``memory_efficient=False`` is
    plain autodiff (activations of every block stored): use it for higher-order derivatives,
    which the custom backward pass does not provide. Exported graphs never carry the custom
    gradient. The backward pass rebuilds a block only once the block above has its gradients
    (control dependencies), so TensorFlow's dataflow executor cannot run the whole inverse chain
    early and hold every block's activations at once. XLA (``jit_compile=True``) drops control
    dependencies and schedules straight-line code as it likes, so there every run of two or more
    consecutive shape-preserving blocks is walked by a ``tf.while_loop``: an iteration's buffers
    die before the next one starts, and the compiler can neither keep a block's rebuilt
    activations nor merge them with the forward pass's; only the gradients are carried. Blocks
    of one configuration (a RevViT's) share one loop body, each iteration reading its block's
    weights and substituting them (``keras.StatelessScope``), so the compiled program does not
    grow with depth;
    other runs pick their block with ``tf.switch_case``. Blocks that change the shape are unrolled, ordered by
    an optimization barrier (``XlaOptimizationBarrier``, as in JAX's remat) over the rebuilt
    input, its cotangent and the gradients of the block above. Measured figures:
    ``benchmarks/revvit_memory.py --paths eager graph xla``.

    Args:
        blocks: the invertible blocks, applied in order in the forward direction.
        memory_efficient: rebuild activations in the backward pass instead of storing them.
        event_ndims: rank of one event of the input (default: the first block's).

    References: Gomez, Ren, Urtasun & Grosse, "The Reversible Residual Network: Backpropagation
    Without Storing Activations", arXiv:1707.04585, §4 and Algorithm 1; Mangalam et al.,
    "Reversible Vision Transformers", arXiv:2302.04869, §3.3.
    """

    def __init__(self, blocks: Sequence[InvertibleLayer | dict], memory_efficient: bool = True,
                 event_ndims: int | None = None, **kwargs):
        kwargs.pop("layers", None)
        blocks = [keras.saving.deserialize_keras_object(b) if isinstance(b, dict) else b for b in blocks]
        if not blocks:
            raise ValueError("ReversibleStack needs a non-empty list of blocks")
        if event_ndims is None:
            event_ndims = getattr(blocks[0], "event_ndims", 3)
        super().__init__(blocks, event_ndims=event_ndims, **kwargs)
        self.memory_efficient = bool(memory_efficient)

    @property
    def blocks(self) -> list[InvertibleLayer]:
        return self.steps

    def _forward_and_log_det(self, x):
        if not self.memory_efficient or is_exporting():
            return super()._forward_and_log_det(x)
        return self._reversible_forward(x)

    def _reversible_forward(self, x):
        run_blocks = functools.partial(InvertibleSequential._forward_and_log_det, self)
        blocks = self.steps

        @tf.custom_gradient
        def reversible_forward(x):
            with record.stop_recording():  # record nothing inside: the backward rebuilds it
                z, log_det = run_blocks(x)

            def backward(dz, d_log_det, variables=None):
                variables = list(variables or ())
                if _in_xla_context():
                    dx, grads = _backward_in_loops(blocks, z, dz, d_log_det, variables)
                else:
                    dx, grads = _backward_unrolled(blocks, z, dz, d_log_det, variables)
                grads = [tf.zeros_like(v) if g is None else g for v, g in zip(variables, grads)]
                return dx, grads

            return (z, log_det), backward

        return reversible_forward(x)

    def get_config(self):
        config = super().get_config()
        config["blocks"] = config.pop("layers")
        config["memory_efficient"] = self.memory_efficient
        return config


def _rebuild_function(block: InvertibleLayer):
    return getattr(block, "reconstruct_and_vjp", None) or functools.partial(vjp_by_recomputation, block)


def _in_xla_context() -> bool:
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def _backward_unrolled(blocks, z, dz, d_log_det, variables):
    """The backward pass as straight-line code, one block after the other from the top:
    ``(dx, variable_grads)`` (``None`` where unconnected)."""
    y, dy = z, dz
    grads = [None] * len(variables)
    block_grads = []
    for block in reversed(blocks):
        # The inverse chain needs only z: a dataflow executor would run all of it ahead of the
        # VJPs and hold every block's rebuilt activations at once. Rebuilding a block only after
        # the block above has its gradients keeps one block's activations alive at a time.
        y, dy = _after(y, dy, [g for g in block_grads if isinstance(g, tf.Tensor)])
        y, dy, block_grads = _rebuild_function(block)(y, dy, d_log_det, variables)
        grads = add_gradients(grads, block_grads)
    return dy, grads


def _shape_preserving_runs(blocks, z_shape) -> list[list[InvertibleLayer]]:
    """The blocks from the top, grouped into maximal runs of consecutive blocks whose input
    shape equals their output shape (and so the run's shape): each run can be one loop."""
    runs, shape = [], tuple(z_shape)
    for block in reversed(blocks):
        input_shape = tuple(block.compute_input_shape(shape))
        if runs and input_shape == shape and runs[-1][1] == shape:
            runs[-1][0].append(block)
        else:
            runs.append(([block], shape if input_shape == shape else None))
        shape = input_shape
    return [run for run, _ in runs]


def _backward_in_loops(blocks, z, dz, d_log_det, variables):
    """The backward pass under XLA: every run of two or more shape-preserving blocks is a
    ``tf.while_loop`` over the blocks (`_stacked_loop` when the blocks are copies of one
    configuration, else `_switch_loop`). A loop iteration's buffers are dead when the next one
    starts, so the compiler cannot keep one block's rebuilt activations (or share them with the
    forward pass by common-subexpression elimination) while the blocks below are processed: the
    activation memory is that of one block whatever the depth. Blocks that change the shape run
    unrolled, ordered as in `_backward_unrolled`."""
    y, dy = z, dz
    grads = [None] * len(variables)
    for run in _shape_preserving_runs(blocks, z.shape):
        if len(run) == 1:
            y, dy = _after(y, dy, [g for g in grads if isinstance(g, tf.Tensor)])
            y, dy, block_grads = _rebuild_function(run[0])(y, dy, d_log_det, variables)
            grads = add_gradients(grads, block_grads)
        elif _same_configuration(run):
            y, dy, grads = _stacked_loop(run, y, dy, d_log_det, variables, grads)
        else:
            y, dy, grads = _switch_loop(run, y, dy, d_log_det, variables, grads)
    return dy, grads


def _configuration(block) -> tuple:
    """What must agree for blocks to share one compiled body: class, configuration (the name
    aside), and every variable's shape, dtype and trainability, in order."""
    config = {k: v for k, v in block.get_config().items() if k != "name"}
    return type(block), repr(config), [(tuple(v.shape), v.dtype, v.trainable) for v in block.variables]


def _same_configuration(run) -> bool:
    first = _configuration(run[0])
    return all(_configuration(block) == first for block in run[1:])


def _stacked_loop(run, y, dy, d_log_det, variables, grads):
    """A run of blocks of one configuration as one loop body (as JAX's scan over layers):
    iteration ``i`` reads block ``i``'s weights (``tf.switch_case`` over the blocks' variables)
    and runs the first block's code with them substituted (``keras.StatelessScope``), taking the
    gradients with respect to those weight values. The compiled body is one block whatever the
    depth, and no stacked copy of the run's weights is made (that copy, ``tf.stack`` of every
    block's weights, was as big as the weights: under XLA it made the step's buffers grow with
    depth by the weights' size on top of the gradients'). The gradients are written to one
    ``TensorArray`` per weight slot."""
    template = run[0]
    slots = template.variables
    trainable = [j for j, v in enumerate(slots) if v.trainable]
    index = {id(v): k for k, v in enumerate(variables)}
    branches = [lambda block=block: [tf.convert_to_tensor(v) for v in block.variables] for block in run]

    def body(i, y, dy, *arrays):
        values = tf.switch_case(i, branches)
        values = [tf.ensure_shape(value, slot.shape) for value, slot in zip(values, slots)]
        with keras.StatelessScope(state_mapping=list(zip(slots, values))):
            x, dx, block_grads = _rebuild_function(template)(y, dy, d_log_det, [values[j] for j in trainable])
        arrays = [a.write(i, tf.zeros_like(values[j]) if g is None else g)
                  for a, j, g in zip(arrays, trainable, block_grads)]
        return (i + 1, tf.ensure_shape(x, y.shape), tf.ensure_shape(dx, dy.shape), *arrays)

    arrays = [tf.TensorArray(slots[j].dtype, size=len(run), element_shape=slots[j].shape) for j in trainable]
    _, y, dy, *arrays = tf.while_loop(
        lambda i, *_: i < len(run), body, (tf.constant(0), y, dy, *arrays), parallel_iterations=1
    )
    grads = list(grads)
    for slot, array in zip(trainable, arrays):
        stacked_grads = array.stack()
        for k, block in enumerate(run):
            position = index.get(id(_backing_variable(block.variables[slot])))
            if position is not None:
                g = stacked_grads[k]
                grads[position] = g if grads[position] is None else grads[position] + g
    return y, dy, grads


def _backing_variable(variable):
    """The TensorFlow variable behind a Keras variable (what ``tf.custom_gradient`` lists)."""
    return getattr(variable, "_value", variable)


def _switch_loop(run, y, dy, d_log_det, variables, grads):
    """A run of blocks of different configurations: the loop body picks block ``i`` with
    ``tf.switch_case``; the gradients of every variable are the loop's carried state."""
    carried = [tf.zeros_like(v) if g is None else g for v, g in zip(variables, grads)]

    def make_branch(block, y, dy, carried):
        def branch():
            x, dx, block_grads = _rebuild_function(block)(y, dy, d_log_det, variables)
            return [x, dx, *add_gradients(carried, block_grads)]
        return branch

    def body(i, y, dy, *carried):
        x, dx, *carried = tf.switch_case(i, [make_branch(b, y, dy, list(carried)) for b in run])
        return (i + 1, tf.ensure_shape(x, y.shape), tf.ensure_shape(dx, dy.shape), *carried)

    _, y, dy, *grads = tf.while_loop(
        lambda i, *_: i < len(run), body, (tf.constant(0), y, dy, *carried), parallel_iterations=1
    )
    return y, dy, grads


def _after(y, dy, done: list):
    """``(y, dy)``, usable only once ``dy`` and the tensors ``done`` are computed.

    Outside XLA a control dependency does it. XLA ignores control dependencies between pure ops,
    so there an optimization barrier over ``(y, dy, *done)`` makes it a data dependency
    (``done`` passes through unchanged and is not returned: its users keep the original tensors,
    which the barrier already forced)."""
    if _in_xla_context():
        y, dy, *_ = tf2xla.optimization_barrier(y, dy, *done)
        return y, dy
    with tf.control_dependencies([dy, *done]):
        return tf.identity(y), dy
