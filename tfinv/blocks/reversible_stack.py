"""A stack of reversible blocks trained without storing activations."""

from __future__ import annotations

import functools
import re
import warnings
from typing import Sequence

import keras
import tensorflow as tf
# Keras's call context (the model being called and its ``training`` flag); no public form.
from keras.src.backend.common import global_state

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

    Fused optimizer updates (``fused_update=True``, LOMO's idea): even with flat activation
    memory, an ordinary training step holds the gradient of every weight at once (the optimizer
    applies them together after the backward pass), which grows with depth. With
    ``fused_update=True``, in a training call of a compiled Keras model (``fit``,
    ``train_on_batch``: a call of the model under a recording gradient tape, not with
    ``training=False``), the backward pass applies the model's optimizer to each block's weights
    as soon as their gradients are known, so a block's gradients die with its step of the walk.

    What differs from standard training: the stack's weights get no gradient (``None``) in the
    step's gradient list. The other weights of the model (head, embeddings) are updated by the
    optimizer's ordinary ``apply`` after the backward pass, which also advances the shared
    ``iterations`` counter once per step; the fused updates run before it, with the same step
    number, so Adam's bias correction and learning-rate schedules are those of standard
    training. Per-weight clipping (``clipnorm``, ``clipvalue``), weight decay,
    ``loss_scale_factor``, constraints and EMA are applied as the optimizer's ``apply`` does; the
    updates equal standard training up to float32 rounding. What cannot work when each block is
    updated before the next one's gradients exist raises a ``ValueError``: ``global_clipnorm``
    (needs every gradient's norm first), `keras.optimizers.LossScaleOptimizer` (mixed float16:
    skips the whole step when any gradient is not finite), ``gradient_accumulation_steps``,
    several ``tf.distribute`` replicas (gradients are summed across replicas before the update),
    ``memory_efficient=False``, a model with no trainable weight outside its fused stacks, and a
    weight shared by two blocks. Outside training calls (no tape, ``training=False``, or a model
    without an optimizer) the stack returns ordinary gradients. A custom training loop that calls
    a compiled model under a tape gets ``model.optimizer`` applied in the backward pass and
    ``None`` gradients for the stack, as ``fit`` does: its own
    ``model.optimizer.apply(grads, model.trainable_variables)`` then completes the step; a loop
    with another optimizer, or one that only inspects gradients, needs ``fused_update=False``.
    Unlike LOMO (plain SGD with its own gradient normalisation), any Keras 3 optimizer with a
    per-variable ``update_step`` is fused unchanged.

    Under XLA the fused backward pass is not a loop but straight-line code, one block after the
    other from the top, each block's rebuild ordered after the update of the block above by an
    optimization barrier over the updated weights (as the shape-changing blocks are): every
    update then writes its own weights and slots in place (they are the step's input buffers).
    A loop would need a ``tf.switch_case`` over every block's variables, whose outputs XLA does
    not update in place (measured with Adam: the step's buffers grew 1.6x from depth 4 to 32
    that way). Measured (``benchmarks/revvit_memory.py --modes reversible ordinary fused``,
    RevViT, XLA): the compiled step's own buffers stay at 29.3 MB from depth 4 to 32 (1.00x,
    SGD and Adam), where standard reversible training grows 1.33x with the gradients
    (16.1 -> 21.4 MB), at about its throughput. The constant is larger than the loop's one-block
    15.3 MB (XLA schedules the straight-line rebuild of a block less tightly), so at that width
    the fused step needs less memory than the standard one only beyond about 70 blocks.

    Args:
        blocks: the invertible blocks, applied in order in the forward direction.
        memory_efficient: rebuild activations in the backward pass instead of storing them.
        event_ndims: rank of one event of the input (default: the first block's).
        fused_update: apply the optimizer's update to each block inside the backward pass
            (needs ``memory_efficient=True``).

    References: Gomez, Ren, Urtasun & Grosse, "The Reversible Residual Network: Backpropagation
    Without Storing Activations", arXiv:1707.04585, §4 and Algorithm 1; Mangalam et al.,
    "Reversible Vision Transformers", arXiv:2302.04869, §3.3; Lv et al., "Full Parameter
    Fine-tuning for Large Language Models with Limited Resources" (LOMO), arXiv:2306.09782, §3.
    """

    def __init__(self, blocks: Sequence[InvertibleLayer | dict], memory_efficient: bool = True,
                 event_ndims: int | None = None, fused_update: bool = False, **kwargs):
        kwargs.pop("layers", None)
        blocks = [keras.saving.deserialize_keras_object(b) if isinstance(b, dict) else b for b in blocks]
        if not blocks:
            raise ValueError("ReversibleStack needs a non-empty list of blocks")
        if event_ndims is None:
            event_ndims = getattr(blocks[0], "event_ndims", 3)
        super().__init__(blocks, event_ndims=event_ndims, **kwargs)
        self.memory_efficient = bool(memory_efficient)
        self.fused_update = bool(fused_update)
        if self.fused_update and not self.memory_efficient:
            raise ValueError(
                f"ReversibleStack '{self.name}': fused_update=True needs memory_efficient=True (the updates "
                "are applied inside the reversible backward pass; ordinary autodiff has none)"
            )

    @property
    def blocks(self) -> list[InvertibleLayer]:
        return self.steps

    def _forward_and_log_det(self, x):
        if not self.memory_efficient or is_exporting():
            return super()._forward_and_log_det(x)
        return self._reversible_forward(x, self._fused_optimizer())

    def _fused_optimizer(self):
        """The optimizer the backward pass applies, or ``None`` (ordinary gradients).

        A training call is a call of a Keras model (found through Keras's call context) under a
        recording gradient tape and not with ``training=False``: Keras's ``train_step`` passes
        ``training=True`` only to models whose ``call`` takes it, so the tape is the signal that
        holds for every model. The optimizer is that model's (``model.optimizer``)."""
        if not self.fused_update or not record.could_possibly_record():
            return None
        context = global_state.get_global_attribute("current_call_ctx")
        training = None if context is None else context.get_value("training")
        if context is None or training is False:
            return None
        model = context.entry_layer
        optimizer = getattr(model, "optimizer", None)
        if optimizer is None and not training:
            return None  # a gradient through an uncompiled model (analysis, custom loops)
        if optimizer is None:
            raise ValueError(
                f"ReversibleStack '{self.name}' has fused_update=True: a training call applies the "
                f"optimizer of the model being called ('{model.name}'), which has none; compile the "
                "model with an optimizer and train with fit/train_on_batch, or use fused_update=False"
            )
        _check_fusable(self, optimizer, model)
        return optimizer

    def _reversible_forward(self, x, optimizer=None):
        run_blocks = functools.partial(InvertibleSequential._forward_and_log_det, self)
        blocks = self.steps

        @tf.custom_gradient
        def reversible_forward(x):
            with record.stop_recording():  # record nothing inside: the backward rebuilds it
                z, log_det = run_blocks(x)

            def backward(dz, d_log_det, variables=None):
                variables = list(variables or ())
                fused = None if optimizer is None else _FusedUpdate(optimizer, blocks, variables)
                if _in_xla_context() and fused is None:
                    dx, grads = _backward_in_loops(blocks, z, dz, d_log_det, variables)
                else:  # fused updates under XLA too: see the class docstring
                    dx, grads = _backward_unrolled(blocks, z, dz, d_log_det, variables, fused)
                # Fused weights were updated in the walk: no gradient for the optimizer's apply.
                grads = [None if fused and fused.owns(k) else tf.zeros_like(v) if g is None else g
                         for k, (v, g) in enumerate(zip(variables, grads))]
                return dx, grads

            return (z, log_det), backward

        return reversible_forward(x)

    def get_config(self):
        config = super().get_config()
        config["blocks"] = config.pop("layers")
        config["memory_efficient"] = self.memory_efficient
        config["fused_update"] = self.fused_update
        return config


def _check_fusable(stack: ReversibleStack, optimizer, model) -> None:
    """Raises a ``ValueError`` for training settings that need every gradient before any update."""
    name = f"ReversibleStack '{stack.name}' with fused_update=True"
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        raise ValueError(
            f"{name} cannot use a LossScaleOptimizer (mixed_float16): it skips the whole step when any "
            "gradient is not finite, which needs every gradient before any update; train in float32 or "
            "mixed_bfloat16, or use fused_update=False")
    if optimizer.global_clipnorm:
        raise ValueError(
            f"{name} cannot clip by the global norm (global_clipnorm={optimizer.global_clipnorm}): it needs "
            "every gradient before any update; use the per-weight clipnorm or clipvalue, or fused_update=False")
    if optimizer.gradient_accumulation_steps:
        raise ValueError(
            f"{name} cannot accumulate gradients (gradient_accumulation_steps="
            f"{optimizer.gradient_accumulation_steps}): the gradients are not kept; use fused_update=False")
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1:
        raise ValueError(
            f"{name} needs a single replica, got a tf.distribute strategy with {replicas}: the gradients "
            "must be summed across replicas before the update; use fused_update=False")
    if not optimizer.built:
        # What the optimizer's first apply would do, needed before it: the slots of the stack's
        # weights are updated in the backward pass (Keras builds it lazily, on first trace).
        # Built outside the stack's name scope, so its variables are named as Keras names them.
        outer_scopes = global_state.get_global_attribute("name_scope_stack")
        global_state.set_global_attribute("name_scope_stack", [])
        try:
            with keras.name_scope(optimizer.name, caller=optimizer):
                optimizer.build(model.trainable_weights)
        finally:
            global_state.set_global_attribute("name_scope_stack", outer_scopes)
        optimizer.built = True
    fused = {id(v) for layer in model._flatten_layers()
             if isinstance(layer, ReversibleStack) and layer.fused_update for v in layer.trainable_variables}
    if all(id(v) in fused for v in model.trainable_variables):
        raise ValueError(
            f"{name}: the model '{model.name}' needs a trainable weight outside its fused stacks (the "
            "optimizer's apply, which advances the step counter, must have a gradient to apply)")
    owners = [id(_backing_variable(v)) for block in stack.blocks for v in block.trainable_variables]
    if len(owners) != len(set(owners)):
        raise ValueError(f"{name} needs every trainable weight in one block only (a shared weight's "
                         "gradients from several blocks must be summed before its update)")
    # Keras warns about the weights without a gradient, which here are exactly the fused ones,
    # updated by the backward pass by design; only that exact message is silenced.
    missing = [getattr(v, "path", v.name) for v in model.trainable_weights if id(v) in fused]
    warnings.filterwarnings("ignore", message=re.escape(f"Gradients do not exist for variables {missing} "))


class _FusedUpdate:
    """The optimizer's ``apply`` for a few weights of the stack, inside the backward pass.

    ``variables`` are those ``tf.custom_gradient`` lists (TensorFlow variables); those of the
    stack's blocks are "owned": updated here and given no gradient. The steps are those of
    ``keras.optimizers.Optimizer.apply`` for one group: unscale by ``loss_scale_factor``, clip per
    weight, weight decay, ``update_step`` (through the backend's update, as ``apply`` does), then
    constraints. The step counter is not advanced here (the optimizer's ``apply`` does it once,
    after the backward pass)."""

    def __init__(self, optimizer, blocks: Sequence[InvertibleLayer], variables: Sequence):
        self.optimizer = optimizer
        keras_variables = {id(_backing_variable(v)): v for block in blocks for v in block.trainable_variables}
        self.keras_variables = [keras_variables.get(id(v)) for v in variables]
        self.learning_rate = optimizer.learning_rate

    def owns(self, position: int) -> bool:
        return self.keras_variables[position] is not None

    def apply(self, grads: Sequence, variables: Sequence) -> list:
        """Updates ``variables`` (Keras variables) with ``grads``; returns the updated values read
        back (each read is ordered after its variable's update: usable as a "done" signal)."""
        optimizer, grads, variables = self.optimizer, list(grads), list(variables)
        if not variables:
            return []
        if optimizer.loss_scale_factor is not None:
            grads = [g / optimizer.loss_scale_factor for g in grads]
        grads = optimizer._clip_gradients(grads)
        optimizer._apply_weight_decay(variables)
        optimizer._backend_update_step(grads, variables, self.learning_rate)
        for variable in variables:
            if variable.constraint is not None:
                variable.assign(variable.constraint(variable))
        return [tf.convert_to_tensor(v) for v in variables]

    def apply_owned(self, grads: Sequence) -> tuple[list, list]:
        """Updates the owned weights whose gradient in ``grads`` (aligned with the custom gradient's
        ``variables``) is known; returns ``(grads without them, updated values)``."""
        positions = [k for k, g in enumerate(grads) if g is not None and self.owns(k)]
        done = self.apply([tf.convert_to_tensor(grads[k]) for k in positions],
                          [self.keras_variables[k] for k in positions])
        return [None if k in positions else g for k, g in enumerate(grads)], done


def _rebuild_function(block: InvertibleLayer):
    return getattr(block, "reconstruct_and_vjp", None) or functools.partial(vjp_by_recomputation, block)


def _in_xla_context() -> bool:
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def _backward_unrolled(blocks, z, dz, d_log_det, variables, fused: _FusedUpdate | None = None):
    """The backward pass as straight-line code, one block after the other from the top:
    ``(dx, variable_grads)`` (``None`` where unconnected; with ``fused``, each block's weights are
    updated as soon as its gradients are known and get ``None``)."""
    y, dy = z, dz
    grads = [None] * len(variables)
    done = []
    for block in reversed(blocks):
        # The inverse chain needs only z: a dataflow executor would run all of it ahead of the
        # VJPs and hold every block's rebuilt activations at once. Rebuilding a block only after
        # the block above has its gradients (or its update) keeps one block's activations alive.
        y, dy = _after(y, dy, done)
        y, dy, block_grads = _rebuild_function(block)(y, dy, d_log_det, variables)
        block_grads, done = _apply_fused(fused, block_grads)
        grads = add_gradients(grads, block_grads)
    return dy, grads


def _apply_fused(fused: _FusedUpdate | None, block_grads: list) -> tuple[list, list]:
    """``(gradients left, tensors to wait for)``: without ``fused``, the gradients and their
    tensors; with it, the owned weights are updated and the updated values are waited for."""
    if fused is None:
        return block_grads, [g for g in block_grads if isinstance(g, tf.Tensor)]
    return fused.apply_owned(block_grads)


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
