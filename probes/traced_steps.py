"""The traced (``tf.function``) step of the engine: one batch in, activations, gradients and outputs out.

:func:`step_function` builds the function that walks the model's graph for one batch, records the
requested layers, and takes the gradient of the batch-sum of one class's target with respect to
them. Traced functions are shared by every engine of the process on the same model object
(``_shared_steps``, at most ``_SHARED_STEPS_MAX``): a second engine on a model does not trace its
graph again. A function closes over a :class:`_StepTwin` (the few attributes the walk needs), not
over the engine, so an engine and its cache are freed with it.
"""
from __future__ import annotations

import threading
import weakref
from typing import Any, Callable

from probes.keras_graph import (graph_of as _graph_of, input_name, is_model as _is_model, run_through_graph,
                                standardize_inputs, takes_training_flag)
from probes.layer_index import _Recorder
from probes.model_outputs import _keras

#: Traced step functions shared by every engine of this process on the same model object:
#: a user's second ``concepts.score`` call on a model does not trace its graph again. Bounded
#: (a traced function keeps its model alive); the oldest entry goes first.
_SHARED_STEPS_MAX = 16
_shared_steps: dict[tuple, tuple[Any, Any, set]] = {}
_shared_lock = threading.Lock()

class _StepTwin:
    """What a traced step function needs of its engine (graph walk and target), without the rest.

    Parameters
    ----------
    engine : probes.engine.Engine
        The engine whose graph, final operation, squash and target are copied.
    """

    def __init__(self, engine: Any) -> None:
        self._graph = engine._graph
        self._final_path = engine._final_path
        self._final_mode = engine._final_mode
        self._squash = engine._squash
        self.target = engine.target

    def _walk(self, graph: Any, inputs: Any, prefix: str, rec: _Recorder) -> Any:
        keras = _keras()
        inputs = standardize_inputs(graph, inputs)
        for ref, tensor in zip(graph.inputs, inputs):
            rec.record(prefix + input_name(ref), tensor)

        def operation_fn(op: Any) -> Callable:
            path = prefix + op.name

            def call(*args: Any, **kwargs: Any) -> Any:
                inner = _graph_of(op) if _is_model(op) else None
                if inner is not None:
                    out = self._walk(inner, args[0], path + "/", rec)
                elif path == self._final_path and self._final_mode == "swap":
                    original = op.activation
                    op.activation = keras.activations.linear
                    try:
                        pre = self._call_layer(op, args, kwargs)
                    finally:
                        op.activation = original
                    rec.logits = pre
                    out = original(pre)
                elif path == self._final_path and self._final_mode == "input":
                    rec.logits = args[0]
                    out = self._call_layer(op, args, kwargs)
                else:
                    out = self._call_layer(op, args, kwargs)
                rec.record(path, out)
                return out

            return call

        outputs = run_through_graph(graph, inputs, operation_fn)
        if isinstance(outputs, (list, tuple)) and len(outputs) == 1:
            outputs = outputs[0]
        return outputs

    @staticmethod
    def _call_layer(op: Any, args: tuple, kwargs: dict) -> Any:
        # Inference mode everywhere (dropout and augmentation off, batch-norm moving statistics).
        if takes_training_flag(op):
            kwargs = dict(kwargs, training=False)
        return op(*args, **kwargs)

    def _target_tensor(self, rec: _Recorder, output: Any) -> Any:
        import tensorflow as tf

        if self._final_mode == "opaque":
            probs = tf.cast(output, tf.float32)
            if self.target == "prob":
                return probs
            # Clamp so that a probability of exactly 0 gives a large finite value, not -inf.
            return tf.math.log(tf.maximum(probs, 1e-30))
        logits = tf.cast(rec.logits if rec.logits is not None else output, tf.float32)
        if self.target == "logit":
            return logits
        if self._squash == "sigmoid":
            return tf.math.sigmoid(logits) if self.target == "prob" \
                else tf.math.log_sigmoid(logits)
        return tf.nn.softmax(logits, axis=-1) if self.target == "prob" \
            else tf.nn.log_softmax(logits, axis=-1)


def step_function(engine: Any, act_layers: tuple, grad_layers: tuple, want_outputs: bool) -> Any:
    """The ``tf.function`` computing the given activations, gradients and (optionally) target values.

    Traced once per layer set, for any batch size; kept in ``engine._steps`` and, once the engine
    has a fingerprint, shared with later engines on the same model object.

    Parameters
    ----------
    engine : probes.engine.Engine
        The engine the step runs for.
    act_layers, grad_layers : tuple of str
        Layer paths whose activations, and whose target gradients, the step returns.
    want_outputs : bool
        Whether the step also returns the target values of every class.

    Returns
    -------
    Callable
        ``step(x, class_index, *extra_inputs) -> {"act": {...}, "grad": {...}[, "out": tensor]}``.
    """
    key = (act_layers, grad_layers, want_outputs)
    if key in engine._steps:
        return engine._steps[key]
    # Everything the traced graph depends on: the model object (weights are read live), what
    # is explained (target, output, squash) and the input signature.
    # (Shape probing during __init__ runs before the fingerprint exists: not shared.)
    fingerprint = getattr(engine, "fingerprint", None)
    shared_key = (id(engine.model), fingerprint, engine.target, engine.output_index, engine._image_position,
                  engine.input_shape, tuple((n, tuple(engine._extras.shapes[n]), str(engine._extras.dtypes[n]))
                                          for n in engine._extras.names), key)
    with _shared_lock:
        found = _shared_steps.get(shared_key) if fingerprint is not None else None
        if found is not None and found[0]() is not engine.model:
            del _shared_steps[shared_key]   # another model now has that id
            found = None
    if found is not None:
        engine._steps[key], engine._step_nones[key] = found[1], found[2]
        engine._none_grads |= found[2]
        return found[1]
    import tensorflow as tf

    wanted = set(act_layers) | set(grad_layers)
    grad_set = set(grad_layers)
    # Layers without a gradient are noted at trace time, in a set of this step function's own
    # (engines sharing it read it after each call, see _batch_results).
    none_grads: set[str] = set()
    engine._step_nones[key] = none_grads
    # The traced function closes over a twin holding only what the walk needs, not over this
    # engine (whose cache may hold a lot of arrays and must be freed with it).
    twin = _StepTwin(engine)

    keras = _keras()
    n_inputs = len(engine._graph.inputs)
    position = engine._image_position
    output_index = engine.output_index

    def step(x: Any, class_index: Any, *extras: Any) -> dict:
        inputs = list(extras)
        inputs.insert(position, x)
        with tf.GradientTape(watch_accessed_variables=False, persistent=False) as tape:
            rec = _Recorder(wanted, tape.watch if grad_layers else None, grad_set)
            output = twin._walk(twin._graph, inputs if n_inputs > 1 else x, "", rec)
            if len(twin._graph.outputs) > 1:
                output = keras.tree.flatten(output)[output_index]
            result: dict[str, Any] = {"act": {}, "grad": {}}
            if grad_layers or want_outputs:
                target = twin._target_tensor(rec, output)
            if grad_layers:
                objective = tf.reduce_sum(tf.gather(target, class_index, axis=1))
        for path in act_layers:
            result["act"][path] = tf.cast(rec.tensors[path], tf.float32)
        if grad_layers:
            sources = [rec.tensors[p] for p in grad_layers]
            grads = tape.gradient(objective, sources)
            for path, source, grad in zip(grad_layers, sources, grads):
                if grad is None:
                    # Noted at trace time and raised outside TensorFlow, so the user gets our
                    # message rather than a traceback from inside the graph.
                    none_grads.add(path)
                    grad = tf.zeros_like(source)
                result["grad"][path] = tf.cast(grad, tf.float32)
        if want_outputs:
            result["out"] = target
        return result

    spec = [tf.TensorSpec((None, *engine.input_shape), tf.float32),
            tf.TensorSpec((), tf.int32)]
    spec += [tf.TensorSpec((None, *engine._extras.shapes[n]), tf.as_dtype(engine._extras.dtypes[n]))
             for n in engine._extras.names]
    fn = tf.function(step, input_signature=spec)
    engine._steps[key] = fn
    if fingerprint is None:
        return fn
    try:
        model_ref = weakref.ref(engine.model)
    except TypeError:
        return fn
    with _shared_lock:
        _shared_steps[shared_key] = (model_ref, fn, none_grads)
        while len(_shared_steps) > _SHARED_STEPS_MAX:
            del _shared_steps[next(iter(_shared_steps))]
    return fn
