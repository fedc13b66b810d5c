"""The contract every invertible layer (and flow model) must pass.

Each ``check_*`` function takes a built, non-identity subject and an example input and raises
``AssertionError`` with the measured error if the subject breaks the contract. Errors are
measured *relative, per example*: example ``i`` contributes ``max|actual_i - expected_i| /
max(max|expected_i|, floor)`` and the error is the largest of these. The floor (default
``1e-2``, far below 1) only keeps exactly-zero quantities (volume-preserving log-dets) from
dividing by zero: a quantity of size ``s >= floor`` is held to ``tol * s``, so a stated
relative error cannot hide behind a large neighbour in the batch or behind a floor of 1.
The functions return the measured error so callers can report it.

A subject is an `InvertibleLayer` or a `FlowModel`: anything with ``forward_and_log_det(x)``
and ``inverse_and_log_det(z)``. For a conditional subject the checks take a fixed ``context``
(the Jacobian is then the one of ``x -> f(x, context)``), and `check_context_dependence` checks
that the context really changes the map.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any, Iterator, Mapping

import keras
import numpy as np
import tensorflow as tf

__all__ = [
    "relative_error",
    "check_not_identity",
    "check_rearrangement",
    "distance_from_rearrangement",
    "check_round_trip",
    "check_log_det",
    "check_tfp_api",
    "check_serialization",
    "check_fit_step",
    "check_jit",
    "check_empty_batch",
    "check_context_dependence",
    "check_tfp_training",
    "dtype_policy",
    "check_float64_policy",
    "check_mixed_precision",
]


SCALE_FLOOR = 1e-2


def relative_error(actual, expected, floor: float = SCALE_FLOOR) -> float:
    """Largest per-example ``max|actual_i - expected_i| / max(max|expected_i|, floor)``, float64.

    The leading axis is the batch (a vector counts as one example per element). For a tensor
    without a batch axis (a weight, a gradient) compare ``actual[None]`` with ``expected[None]``:
    one scale for the whole tensor.
    """
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    if actual.shape != expected.shape:
        raise AssertionError(f"shape mismatch: {actual.shape} vs {expected.shape}")
    if not (np.all(np.isfinite(actual)) and np.all(np.isfinite(expected))):
        raise AssertionError("non-finite values")
    if actual.size == 0:
        return 0.0
    rows = max(actual.shape[0], 1) if actual.ndim else 1
    diff = np.abs(actual - expected).reshape(rows, -1).max(axis=1)
    scale = np.maximum(np.abs(expected).reshape(rows, -1).max(axis=1), floor)
    return float(np.max(diff / scale))


def _assert_close(actual, expected, tol: float, what: str) -> float:
    err = relative_error(actual, expected)
    if not err <= tol:
        raise AssertionError(f"{what}: relative error {err:.3e} exceeds {tol:.1e}")
    return err


def _batch_sum(log_det) -> np.ndarray:
    """A log-det reduced to the leading (batch) axis."""
    ld = np.asarray(log_det, np.float64)
    return ld.reshape(ld.shape[0], -1).sum(axis=1) if ld.ndim > 1 else ld


def _forward(subject, x, context=None):
    return subject.forward_and_log_det(x) if context is None else subject.forward_and_log_det(x, context)


def _inverse(subject, z, context=None):
    return subject.inverse_and_log_det(z) if context is None else subject.inverse_and_log_det(z, context)


def _inverse_input(subject, x, seed: int = 1, context=None):
    """A point of the codomain away from ``f(x)``: ``f(x)`` plus 0.1-scaled Gaussian noise."""
    z, _ = _forward(subject, x, context)
    noise = tf.random.stateless_normal(tf.shape(z), seed=[seed, 0], dtype=z.dtype)
    return z + 0.1 * noise


def distance_from_rearrangement(z, x) -> float:
    """Relative distance of ``z`` from the nearest rearrangement of ``x``'s entries, per example.

    A shape-changing layer at identity is a rearrangement of its input (a reshape,
    space-to-depth, patchify, flatten, in whatever order); sorting both examples' entries and
    comparing them is the best matching in the max norm, so this is 0 exactly for such maps.
    """
    z = np.asarray(z, np.float64)
    x = np.asarray(x, np.float64)
    if z.shape[0] != x.shape[0] or z.size != x.size:
        raise AssertionError(f"forward changed the number of entries per example: {x.shape} -> {z.shape}")
    z_sorted = np.sort(z.reshape(z.shape[0], -1), axis=1)
    x_sorted = np.sort(x.reshape(x.shape[0], -1), axis=1)
    return relative_error(z_sorted, x_sorted)


def check_not_identity(subject, x, min_change: float = 1e-3, context=None) -> float:
    """The forward map is not the identity, nor (for a shape-changing subject) the trivial map it
    would be at identity: its output differs from ``x`` — or, when the shapes differ, from every
    rearrangement of ``x``'s entries (reshape, space-to-depth, ...) — by more than ``min_change``."""
    z, _ = _forward(subject, x, context)
    if tuple(z.shape) == tuple(x.shape):
        change = relative_error(z, x)
        what = "the identity"
    else:
        change = distance_from_rearrangement(z, x)
        what = "a rearrangement of its input (its trivial map: reshape / space-to-depth)"
    if not change > min_change:
        raise AssertionError(f"forward is (nearly) {what}: relative change {change:.3e}")
    return change


def check_rearrangement(subject, x, tol: float = 1e-6, plain_reshape: bool = False) -> float:
    """For layers that are rearrangements by design: the output holds exactly the input's entries,
    and — unless ``plain_reshape`` (Flatten) — not in the input's own order (Squeeze, Patchify)."""
    z, _ = subject.forward_and_log_det(x)
    err = distance_from_rearrangement(z, x)
    if not err <= tol:
        raise AssertionError(f"output is not a rearrangement of the input: relative error {err:.3e}")
    flat_z = np.asarray(z).reshape(z.shape[0], -1)
    flat_x = np.asarray(x).reshape(x.shape[0], -1)
    if np.array_equal(flat_z, flat_x) != plain_reshape:
        raise AssertionError("forward is a plain reshape of its input" if not plain_reshape
                             else "forward is not the plain (row-major) reshape of its input")
    return err


def check_round_trip(subject, x, tol: float = 1e-5, context=None) -> dict[str, float]:
    """``inverse(forward(x)) == x`` and ``forward(inverse(z)) == z`` within ``tol``."""
    z, _ = _forward(subject, x, context)
    x_back, _ = _inverse(subject, z, context)
    errors = {"x->z->x": _assert_close(x_back, x, tol, "inverse(forward(x))")}
    z2 = _inverse_input(subject, x, context=context)
    x2, _ = _inverse(subject, z2, context)
    z_back, _ = _forward(subject, x2, context)
    errors["z->x->z"] = _assert_close(z_back, z2, tol, "forward(inverse(z))")
    return errors


def _autodiff_jacobian(fn, x, context=None) -> np.ndarray:
    """The autodiff Jacobian of ``fn`` per example, float64, shape ``(batch, D, D)``.

    ``fn(t)`` (``fn(t, context)`` when a context is given) maps a batch to a batch, example by
    example, and keeps the number of entries ``D`` of an example. The Jacobian is reverse-mode
    autodiff, all rows in one backward pass: example ``i`` is repeated ``D`` times, copy ``k``
    selects output entry ``k``, and the gradient of the sum of the selected entries is row ``k``
    of example ``i``'s Jacobian at copy ``k`` — the rows ``tape.batch_jacobian`` computes one by
    one (under ``pfor``), for a fifth of the cost. Like ``batch_jacobian`` it assumes that
    examples do not interact.
    """
    x = tf.convert_to_tensor(x)
    batch, size = int(x.shape[0]), int(np.prod(x.shape[1:]))
    copies = tf.repeat(x, size, axis=0)  # (batch * size, ...): example i, copy k at i * size + k
    context_copies = None if context is None else tf.repeat(context, size, axis=0)
    with tf.GradientTape() as tape:
        tape.watch(copies)
        y = fn(copies) if context is None else fn(copies, context_copies)
        y = tf.reshape(y, [batch, size, -1])
        if y.shape[-1] != size:
            raise AssertionError(f"Jacobian is not square: {(int(y.shape[-1]), size)}")
        selected = tf.linalg.diag_part(y)  # (batch, size): copy k's output entry k
    rows = tape.gradient(selected, copies)
    if rows is None:
        raise AssertionError("the output does not depend on the input (no gradient)")
    return np.asarray(rows, np.float64).reshape(batch, size, size)


def _autodiff_log_det(fn, x, context=None) -> np.ndarray:
    """``log|det J|`` per example from the autodiff Jacobian of ``fn`` (`_autodiff_jacobian`,
    float64 slogdet)."""
    sign, logabs = np.linalg.slogdet(_autodiff_jacobian(fn, x, context))
    if np.any(sign == 0):
        raise AssertionError("the autodiff Jacobian is singular")
    return logabs


@contextlib.contextmanager
def _eager_inference(subject) -> Iterator[None]:
    """Runs a flow model's methods eagerly inside the block (its ``inference_mode``, restored
    afterwards); other subjects are left alone. The autodiff Jacobian of the reference is taken
    this way: the same map, differentiated op by op (vectorising the Jacobian through a compiled
    function call costs several times more), while the log-dets under test still come from the
    model's compiled methods, as users get them."""
    if not hasattr(subject, "inference_mode"):
        yield
        return
    mode = subject.inference_mode
    subject.inference_mode = "eager"
    try:
        yield
    finally:
        subject.inference_mode = mode


def check_log_det(subject, x, tol: float = 1e-4, context=None) -> dict[str, float]:
    """Log-dets match ``slogdet`` of the autodiff Jacobian both ways, and ``fldj(x) = -ildj(f(x))``
    (at a fixed ``context`` for a conditional subject)."""
    z, fldj = _forward(subject, x, context)
    with _eager_inference(subject):
        reference = _autodiff_log_det(lambda t, *c: _forward(subject, t, *c)[0], x, context)
    errors = {"forward": _assert_close(_batch_sum(fldj), reference, tol,
                                       "forward log-det vs slogdet(autodiff Jacobian)")}
    z2 = _inverse_input(subject, x, context=context)
    _, ildj = _inverse(subject, z2, context)
    with _eager_inference(subject):
        reference = _autodiff_log_det(lambda t, *c: _inverse(subject, t, *c)[0], z2, context)
    errors["inverse"] = _assert_close(_batch_sum(ildj), reference, tol,
                                      "inverse log-det vs slogdet(autodiff Jacobian)")
    _, ildj_at_z = _inverse(subject, z, context)
    errors["fldj=-ildj"] = _assert_close(
        -_batch_sum(ildj_at_z), _batch_sum(fldj), tol, "fldj(x) vs -ildj(f(x))"
    )
    expected_shape = tuple(x.shape[: len(x.shape) - getattr(subject, "event_ndims", len(x.shape) - 1)])
    if tuple(fldj.shape) != expected_shape:
        raise AssertionError(f"log-det shape {tuple(fldj.shape)} is not the batch shape {expected_shape}")
    return errors


def check_tfp_api(layer, x, tol: float = 1e-5) -> float:
    """The public TFP API agrees with the fused hooks (and the TFP cache never goes stale)."""
    import tensorflow_probability as tfp

    z, fldj = layer.forward_and_log_det(x)
    _assert_close(layer.forward(x), z, tol, "Bijector.forward")
    _assert_close(layer.inverse(z), layer.inverse_and_log_det(z)[0], tol, "Bijector.inverse")
    n = layer.event_ndims
    n_out = layer.inverse_min_event_ndims  # differs from n for rank-changing layers (Patchify)
    _assert_close(layer.forward_log_det_jacobian(x, event_ndims=n), fldj, tol, "forward_log_det_jacobian")
    _assert_close(
        layer.inverse_log_det_jacobian(z, event_ndims=n_out), layer.inverse_and_log_det(z)[1], tol,
        "inverse_log_det_jacobian",
    )
    # One more event axis: TFP sums the extra axis itself.
    if len(x.shape) > n + 1:
        _assert_close(
            layer.forward_log_det_jacobian(x, event_ndims=n + 1),
            tf.reduce_sum(fldj, axis=-1), tol, "forward_log_det_jacobian(event_ndims + 1)",
        )
    chain = tfp.bijectors.Chain([tfp.bijectors.Invert(layer), layer])
    return _assert_close(chain.forward(x), x, tol, "Chain([Invert(layer), layer]).forward")


def _outputs(subject, x):
    z, fldj = subject.forward_and_log_det(x)
    x_back, ildj = subject.inverse_and_log_det(z)
    return [np.asarray(t) for t in (z, fldj, x_back, ildj)]


def check_serialization(layer, x, tol: float = 1e-6) -> float:
    """``get_config``/``from_config`` + weights, and a ``.keras`` file (``safe_mode=True``),
    reproduce the layer's forward and inverse outputs."""
    expected = _outputs(layer, x)
    clone = type(layer).from_config(layer.get_config())
    clone.build(tuple(x.shape))
    clone.set_weights(layer.get_weights())
    err = max(_assert_close(a, e, tol, "from_config clone") for a, e in zip(_outputs(clone, x), expected))

    inputs = keras.Input(shape=tuple(x.shape[1:]), batch_size=None)
    model = keras.Model(inputs, layer(inputs))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "layer.keras")
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
    loaded_layer = loaded.layers[-1]
    if type(loaded_layer) is not type(layer):
        raise AssertionError(f".keras round trip gave {type(loaded_layer).__name__}")
    err = max(err, _assert_close(loaded(x), expected[0], tol, ".keras model call"))
    for a, e in zip(_outputs(loaded_layer, x), expected):
        err = max(err, _assert_close(a, e, tol, ".keras loaded layer"))
    return err


def check_fit_step(layer, x, learning_rate: float = 1e-2, frozen: Mapping[str, str] | None = None) -> float:
    """One ``model.fit`` step of a one-layer flow: finite loss, and *every* trainable weight moves.

    ``frozen`` maps substrings of weight paths that legitimately receive no gradient at this
    step to the reason why; every other trainable weight must change, and every entry of
    ``frozen`` must match at least one weight (a stale excuse is an error too).
    """
    from tfinv.core.flow_model import FlowModel

    frozen = dict(frozen or {})
    model = FlowModel([layer], input_shape=tuple(x.shape[1:]))
    variables = list(layer.trainable_variables)
    before = [v.numpy() for v in variables]
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    try:
        history = model.fit(tf.data.Dataset.from_tensors(x), epochs=1, verbose=0)
    except ValueError as err:
        if "No gradients provided" not in str(err):
            raise
        paths = [getattr(v, "path", v.name) for v in variables]
        raise AssertionError(
            f"fit step did not change these trainable weights: {paths} (no gradient reaches any)") from err
    loss = history.history["loss"][0]
    if not np.isfinite(loss):
        raise AssertionError(f"fit step loss is not finite: {loss}")
    unused = set(frozen)
    stuck = []
    for variable, value in zip(variables, before):
        path = getattr(variable, "path", variable.name)
        excused = [key for key in frozen if key in path]
        unused -= set(excused)
        if not excused and not np.any(variable.numpy() != value):
            stuck.append(path)
    if stuck:
        raise AssertionError(f"fit step did not change these trainable weights: {stuck}")
    if unused:
        raise AssertionError(f"frozen-weight entries match no weight: {sorted(unused)}")
    return float(loss)


def check_jit(subject, x, tol: float = 1e-5, context=None) -> float:
    """``jit_compile=True`` forward and inverse agree with eager execution."""
    z, fldj = _forward(subject, x, context)
    x_back, ildj = _inverse(subject, z, context)
    jit_forward = tf.function(lambda v: _forward(subject, v, context), jit_compile=True)
    jit_inverse = tf.function(lambda v: _inverse(subject, v, context), jit_compile=True)
    zj, fldj_j = jit_forward(x)
    xj, ildj_j = jit_inverse(z)
    return max(
        _assert_close(zj, z, tol, "jit forward"),
        _assert_close(fldj_j, fldj, tol, "jit forward log-det"),
        _assert_close(xj, x_back, tol, "jit inverse"),
        _assert_close(ildj_j, ildj, tol, "jit inverse log-det"),
    )


def check_empty_batch(subject, x, context=None) -> tuple[tuple, tuple]:
    """A batch of 0 examples gives empty results of the shapes a full batch has, both ways
    (a conditional subject gets ``context`` and, for the empty batch, ``context[:0]``)."""
    kwargs = {} if context is None else {"context": context}
    empty = {} if context is None else {"context": context[:0]}
    z, fldj = subject.forward_and_log_det(x, **kwargs)
    x_back, ildj = subject.inverse_and_log_det(z, **kwargs)
    z0, fldj0 = subject.forward_and_log_det(x[:0], **empty)
    x0, ildj0 = subject.inverse_and_log_det(z[:0], **empty)
    for what, got, full in (("forward z", z0, z), ("forward log-det", fldj0, fldj),
                            ("inverse x", x0, x_back), ("inverse log-det", ildj0, ildj)):
        expected = (0,) + tuple(full.shape[1:])
        if tuple(got.shape) != expected:
            raise AssertionError(f"empty batch: {what} has shape {tuple(got.shape)}, expected {expected}")
        if got.dtype != full.dtype:
            raise AssertionError(f"empty batch: {what} has dtype {got.dtype}, expected {full.dtype}")
    return tuple(z0.shape), tuple(x0.shape)


def check_context_dependence(subject, x, context, other_context, min_change: float = 1e-3) -> float:
    """A conditional subject's forward map and log-det change with the context, and a missing
    context is a ``ValueError``."""
    z, fldj = subject.forward_and_log_det(x, context)
    z_other, fldj_other = subject.forward_and_log_det(x, other_context)
    change = max(relative_error(z_other, z), relative_error(_batch_sum(fldj_other), _batch_sum(fldj)))
    if not change > min_change:
        raise AssertionError(f"the output does not depend on the context: relative change {change:.3e}")
    try:
        subject.forward_and_log_det(x)
    except ValueError:
        return change
    raise AssertionError("a conditional subject accepted a missing context")


def _tfp_distribution(subject, x):
    """TFP's density of ``subject``: ``as_distribution()`` of a model, else
    ``TransformedDistribution(base, Invert(Chain([layer])))`` with an anisotropic diagonal
    Gaussian base over the latent shape (scales from 0.5 to 1.5, so that even a rotation, which
    leaves a standard normal's density unchanged, changes the likelihood)."""
    import tensorflow_probability as tfp

    if hasattr(subject, "as_distribution"):
        return subject.as_distribution()
    z, _ = subject.forward_and_log_det(x)
    event = tuple(z.shape[1:])
    scale = np.linspace(0.5, 1.5, int(np.prod(event))).reshape(event)
    base = tfp.distributions.Independent(
        tfp.distributions.Normal(tf.zeros(event, z.dtype), tf.constant(scale, z.dtype)),
        reinterpreted_batch_ndims=len(event),
    )
    return tfp.distributions.TransformedDistribution(
        base, tfp.bijectors.Invert(tfp.bijectors.Chain([subject]))
    )


def check_tfp_training(subject, x, steps: int = 3, learning_rate: float = 1e-3) -> dict[str, float]:
    """TFP composition lists every weight and TFP's training loop lowers the NLL.

    The distribution is ``subject.as_distribution()`` for a model and
    ``TransformedDistribution(base, Invert(Chain([layer])))`` for a layer; its
    ``trainable_variables`` must be exactly the ``tf.Variable``s behind the subject's Keras
    trainable weights; ``steps`` Adam steps of the TFP training idiom (gradient of
    ``-mean(dist.log_prob(x))`` with respect to ``dist.trainable_variables``, applied by a Keras
    optimizer) must lower it on the same batch. Returns the NLL before and after.
    """
    dist = _tfp_distribution(subject, x)
    listed = dist.trainable_variables
    expected = [v.value if not isinstance(v, tf.Variable) else v for v in subject.trainable_variables]
    if {id(v) for v in listed} != {id(v) for v in expected} or len(listed) != len(expected):
        raise AssertionError(
            f"TFP lists {len(listed)} trainable variables, the subject has {len(expected)} "
            f"trainable weights: {sorted(v.name for v in listed)} vs {sorted(v.name for v in expected)}"
        )

    def nll():
        return -tf.reduce_mean(dist.log_prob(x))

    before = float(nll())
    if not np.isfinite(before):
        raise AssertionError(f"TFP log_prob is not finite: NLL {before}")
    if not listed:
        return {"before": before, "after": before}
    optimizer = keras.optimizers.Adam(learning_rate)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = nll()
        grads = tape.gradient(loss, listed)
        missing = [v.name for v, g in zip(listed, grads) if g is None]
        if missing:
            raise AssertionError(f"no gradient reaches TFP-listed variables {missing}")
        optimizer.apply_gradients(zip(grads, listed))
    after = float(nll())
    if not after < before:
        raise AssertionError(f"TFP training loop did not lower the NLL: {before:.6g} -> {after:.6g}")
    return {"before": before, "after": after}


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Sets Keras's global dtype policy inside the block and always restores the previous one."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _weights_dtypes(subject) -> set[str]:
    return {str(v.dtype) for v in subject.weights}


def check_float64_policy(subject, x, tol: float = 1e-12) -> dict[str, float]:
    """A subject built under the ``float64`` policy holds float64 weights only, computes in
    float64 (outputs and log-dets) and round-trips both ways within ``tol``."""
    if _weights_dtypes(subject) - {"float64"}:
        raise AssertionError(f"float64 policy left weights of dtypes {sorted(_weights_dtypes(subject))}")
    x = tf.cast(x, tf.float64)
    z, fldj = subject.forward_and_log_det(x)
    x_back, ildj = subject.inverse_and_log_det(z)
    for name, t in (("z", z), ("forward log-det", fldj), ("x", x_back), ("inverse log-det", ildj)):
        if t.dtype != tf.float64:
            raise AssertionError(f"float64 policy: {name} has dtype {t.dtype.name}")
    return check_round_trip(subject, x, tol)


def check_mixed_precision(subject, x, policy: str = "mixed_float16", fit: bool = True) -> dict[str, Any]:
    """A subject built under a mixed policy: forward/inverse compute in the half dtype with
    float32 log-dets; TFP's API is dtype-preserving (float32 in, float32 out); results are
    finite; a ``fit`` step (of a one-layer `FlowModel` for a layer, call this inside
    ``dtype_policy(policy)``) has a finite loss; a model's ``sample`` and ``log_prob`` are finite.
    Returns the measured round-trip error (relative) and the fit loss."""
    from tfinv.core.flow_model import FlowModel

    half = tf.as_dtype(keras.dtype_policies.get(policy).compute_dtype)
    z, fldj = subject.forward_and_log_det(x)
    x_back, ildj = subject.inverse_and_log_det(z)
    if z.dtype != half or x_back.dtype != half:
        raise AssertionError(f"{policy}: outputs have dtypes {z.dtype.name}, {x_back.dtype.name}, not {half.name}")
    if fldj.dtype != tf.float32 or ildj.dtype != tf.float32:
        raise AssertionError(f"{policy}: log-dets have dtypes {fldj.dtype.name}, {ildj.dtype.name}, not float32")
    for name, t in (("z", z), ("forward log-det", fldj), ("x", x_back), ("inverse log-det", ildj)):
        if not np.all(np.isfinite(np.asarray(tf.cast(t, tf.float32)))):
            raise AssertionError(f"{policy}: {name} is not finite")
    result = {"round_trip": relative_error(tf.cast(x_back, tf.float32), tf.cast(x, tf.float32))}
    x32 = tf.cast(x, tf.float32)
    if isinstance(subject, FlowModel):
        dist = subject.as_distribution()
        log_prob = dist.log_prob(x32)
        samples = subject.sample(2, seed=1)
        model_log_prob = subject.log_prob(x32)
        if log_prob.dtype != tf.float32 or model_log_prob.dtype != tf.float32:
            raise AssertionError(f"{policy}: log_prob dtypes {log_prob.dtype.name}, {model_log_prob.dtype.name}")
        for name, t in (("as_distribution().log_prob", log_prob), ("log_prob", model_log_prob),
                        ("sample", samples)):
            if not np.all(np.isfinite(np.asarray(tf.cast(t, tf.float32)))):
                raise AssertionError(f"{policy}: {name} is not finite")
        model = subject
    else:
        y = subject.forward(x32)  # the TFP API
        if y.dtype != tf.float32 or subject.inverse(y).dtype != tf.float32:
            raise AssertionError(f"{policy}: the TFP API does not preserve float32")
        if subject.forward_log_det_jacobian(x32, event_ndims=subject.event_ndims).dtype != tf.float32:
            raise AssertionError(f"{policy}: forward_log_det_jacobian is not float32")
        model = FlowModel([subject], input_shape=tuple(x.shape[1:])) if fit else None
    if fit:
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        history = model.fit(tf.data.Dataset.from_tensors(x32), epochs=1, verbose=0)
        loss = history.history["loss"][0]
        if not np.isfinite(loss):
            raise AssertionError(f"{policy}: fit loss is not finite: {loss}")
        result["loss"] = float(loss)
    return result


def perturb_weights(layer, scale: float = 0.1, seed: int = 0) -> None:
    """Adds ``scale * N(0, 1)`` noise to every trainable weight (so no case sits at identity)."""
    rng = np.random.default_rng(seed)
    for variable in layer.trainable_variables:
        value = variable.numpy()
        variable.assign(value + scale * rng.standard_normal(value.shape).astype(value.dtype))


def describe(subject: Any) -> str:
    return f"{type(subject).__name__}({getattr(subject, 'name', '')})"


# --------------------------------------------------------------------------- estimated log-dets
# Layers whose log-det is an estimate (invertible residual blocks) declare
# ``log_det_is_exact = False`` and provide ``dense_log_det(x)`` (exact, dense Jacobian, small
# inputs), ``estimate_log_det(x, estimator, num_probes, seed)`` (one stochastic draw),
# ``deterministic_log_det(x)``, ``g(x)``, ``coefficient`` and ``inverse_with_info(z)``.

__all__ += [
    "log_det_is_exact",
    "check_exact_log_det",
    "check_log_det_estimator",
    "check_lipschitz",
    "check_fixed_point",
]


def log_det_is_exact(subject) -> bool:
    """Whether ``subject``'s log-det is exact (the default) or an estimate."""
    return bool(getattr(subject, "log_det_is_exact", True))


def check_exact_log_det(layer, x, tol: float = 1e-4) -> dict[str, float]:
    """The layer's exact log-det (``dense_log_det``) matches ``slogdet`` of the autodiff Jacobian
    of its forward map within ``tol``; also returns (does not assert) the error of the
    deterministic evaluation/export form against it."""
    exact = np.asarray(layer.dense_log_det(x), np.float64)
    reference = _autodiff_log_det(lambda t: layer.forward_and_log_det(t)[0], x)
    errors = {"dense": _assert_close(exact, reference, tol, "dense_log_det vs slogdet(autodiff Jacobian)")}
    errors["deterministic"] = relative_error(np.asarray(layer.deterministic_log_det(x), np.float64), exact)
    return errors


def check_log_det_estimator(layer, x, estimator: str, samples: int = 400, num_probes: int = 1,
                            seed: int = 0, max_standard_errors: float = 3.0) -> dict[str, Any]:
    """Monte-Carlo check of a stochastic log-det estimator against the exact value.

    Draws ``samples`` independent estimates (stateless seeds). For an unbiased estimator
    (``"roulette"``) the mean of every example must lie within ``max_standard_errors`` standard
    errors of ``dense_log_det``. A biased one (``"series"``, truncated) is only measured: its bias
    is reported with the standard error. Returns ``exact``, ``mean``, ``standard_error``,
    ``bias``, ``z`` (bias / standard error) per example and the per-draw ``variance``.
    """
    exact = np.asarray(layer.dense_log_det(x), np.float64)
    draw = tf.function(lambda s: layer.estimate_log_det(x, estimator, num_probes, s))  # one trace
    draws = np.stack([np.asarray(draw(tf.constant([seed, i])), np.float64) for i in range(samples)])
    mean = draws.mean(axis=0)
    standard_error = draws.std(axis=0, ddof=1) / np.sqrt(samples)
    bias = mean - exact
    z = np.abs(bias) / np.maximum(standard_error, 1e-12)
    report = {"estimator": estimator, "exact": exact.tolist(), "mean": mean.tolist(),
              "standard_error": standard_error.tolist(), "bias": bias.tolist(), "z": z.tolist(),
              "variance": draws.var(axis=0, ddof=1).tolist()}
    if estimator != "series" and not np.all(z <= max_standard_errors):
        raise AssertionError(
            f"{estimator} log-det estimator: mean {mean} is {z.max():.2f} standard errors from the "
            f"exact {exact} (allowed {max_standard_errors})"
        )
    return report


def _top_singular_value(jac: np.ndarray, iterations: int, seed: int) -> float:
    """Power iteration on ``J^T J`` (float64)."""
    v = np.random.default_rng(seed).standard_normal(jac.shape[1])
    for _ in range(iterations):
        v = jac.T @ (jac @ v)
        v /= np.linalg.norm(v)
    return float(np.linalg.norm(jac @ v))


def check_lipschitz(layer, x, points: int = 4, iterations: int = 200, seed: int = 0) -> float:
    """``||J_g||_2`` measured by power iteration on the autodiff Jacobian of ``g`` at ``x`` and at
    ``points - 1`` random points around it stays below the layer's ``coefficient``; returns the
    largest value measured."""
    rng = np.random.default_rng(seed)
    x = np.asarray(x, np.float32)
    largest = 0.0
    for p in range(points):
        at = x if p == 0 else x + rng.standard_normal(x.shape).astype(np.float32)
        jac = _autodiff_jacobian(layer.g, tf.constant(at))
        for i, j in enumerate(jac):
            largest = max(largest, _top_singular_value(j, iterations, seed + i))
    if not largest < layer.coefficient:
        raise AssertionError(f"Lip(g) measured {largest:.5f} is not below the coefficient {layer.coefficient}")
    return largest


def check_fixed_point(layer, x, tol: float = 1e-5) -> dict[str, float]:
    """The fixed-point inverse converges (its flag) at ``forward(x)`` and at a perturbed point,
    and reaches ``x`` within ``tol``; returns the iteration counts."""
    z, _ = layer.forward_and_log_det(x)
    report = {}
    for label, point in (("f(x)", z), ("f(x)+noise", _inverse_input(layer, x))):
        x_back, iterations, step, converged = layer.inverse_with_info(point)
        if not bool(converged):
            raise AssertionError(f"fixed-point inverse at {label} did not converge (step {float(step):.2e})")
        report[label] = int(iterations)
    _assert_close(layer.inverse_with_info(z)[0], x, tol, "fixed-point inverse(forward(x))")
    return report
