"""Phase 2 (the class examples' gradient pass) sharded over a ``dask.distributed`` cluster.

What travels, and why it stays small:

* the model, once per call, as its JSON config + weights (``client.scatter(..., broadcast=True)``); each
  worker process rebuilds it once and keeps the :class:`~probes.engine.Engine` for later tasks, and checks
  that the rebuilt model has the same fingerprint as the local one (so a worker can never score a
  different model);
* the projection spaces (every concept vector), once per call, scattered the same way;
* per task, a shard of the source: file paths for an image set (workers read the files themselves, so they
  must see the same paths: shared storage), or the slice of the array for in-memory images;
* back from each task, only its :class:`~probes.streaming.Projections`: column summaries, the unit-gradient
  sum (one vector of the layer's width) and a few numbers per example -- never activations or gradients.

Shards are whole multiples of the engine's batch size and are merged in order, so every batch the model
sees is the batch the local run sees, and the table equals the local one (to rounding of the merges,
~1e-15). A worker that dies is replaced by the nanny and Dask reruns its tasks elsewhere; a shard Dask
cancels instead (it lost something it cannot recompute, e.g. the scattered model, with the worker) is
scattered and submitted again, up to :data:`SHARD_ATTEMPTS` times. The result does not change. Dask is
imported only here, and only when a client is given.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from probes.sources import InMemoryImages
from probes.streaming import ProjectionSpace, Projections, project_batches

__all__ = ["SHARD_ATTEMPTS", "project_on_cluster", "shard_source", "model_payload"]

#: Times the shards a dying worker took with it are submitted again before the call gives up.
SHARD_ATTEMPTS = 3

# Engines built on this worker process, by (fingerprint, layers, target, batch size): the model is
# rebuilt once per worker, not once per task.
_ENGINES: dict[tuple, Any] = {}


def shard_source(source: Any, start: int, stop: int) -> Any:
    """Examples ``start:stop`` of ``source`` as a source of the same kind (picklable, small).

    Examples
    --------
    >>> len(shard_source(InMemoryImages(np.zeros((10, 2, 2, 1))), 4, 8))
    4
    """
    if hasattr(source, "subset"):
        return source.subset(range(start, stop))
    if isinstance(source, InMemoryImages):
        return InMemoryImages(source.images[start:stop], name=f"{source.name}[{start}:{stop}]")
    raise TypeError(f"Cannot shard a {type(source).__name__} over a Dask cluster: give the examples as image "
                    "files (an ImageSet or folder) or an in-memory array, or run without client=.")


def model_payload(model: Any) -> dict[str, Any]:
    """What a worker needs to rebuild ``model``: its JSON config and weights.

    Examples
    --------
    >>> payload = model_payload(model)
    >>> sorted(payload), len(payload["weights"]) == len(model.weights)
    (['config', 'weights'], True)
    >>> import keras
    >>> rebuilt = keras.models.model_from_json(payload["config"])   # what a worker does
    >>> rebuilt.set_weights(payload["weights"])
    >>> x = np.ones((1, 16, 16, 1), np.float32)
    >>> np.allclose(np.asarray(rebuilt(x)), np.asarray(model(x)))
    True
    """
    return {"config": model.to_json(), "weights": [np.asarray(w) for w in model.get_weights()]}


def _engine_on_worker(payload: dict, fingerprint: str, layers: tuple, target: str, batch_size: int,
                      output: int = 0) -> Any:
    key = (fingerprint, layers, target, batch_size, output)
    if key not in _ENGINES:
        import keras

        from probes.engine import Engine

        model = keras.models.model_from_json(payload["config"])
        model.set_weights(payload["weights"])
        engine = Engine(model, list(layers), target=target, batch_size=batch_size, progress=False, output=output)
        if engine.fingerprint != fingerprint:
            raise RuntimeError(
                "The model rebuilt on a Dask worker differs from the local one (its fingerprint does not match): "
                "custom layers or objects must be importable on the workers, with the same code as locally.")
        _ENGINES[key] = engine
    return _ENGINES[key]


def _project_shard(payload: dict, fingerprint: str, layers: tuple, target: str, batch_size: int, output: int,
                   source: Any, class_index: int, spaces: dict) -> dict:
    """Worker task: the projections of one shard (its spaces are dropped when it is sent back)."""
    engine = _engine_on_worker(payload, fingerprint, layers, target, batch_size, output)
    return project_batches(engine.stream(source, class_index), spaces)


def _shared(client: Any, engine: Any, what: str, value: Any) -> Any:
    """Scatter ``value`` to every worker once per engine and client (e.g. the model for all classes)."""
    cache = engine.__dict__.setdefault("_dask_scattered", {})
    key = (what, client.id, id(value) if what != "model" else engine.fingerprint)
    if key not in cache:
        cache[key] = (client.scatter(value, broadcast=True, hash=False), value)
    return cache[key][0]


def _wait(futures: Any) -> None:
    """Until every future is finished, failed or cancelled (Dask's ``wait`` raises on cancelled ones)."""
    from dask.distributed import wait

    try:
        wait(list(futures))
    except Exception as exc:
        if "cancel" not in type(exc).__name__.lower():
            raise


def check_client(client: Any, engine: Any = None) -> None:
    """Refuse, before any work, a Dask client that is closed and a model this module cannot ship.

    Examples
    --------
    >>> check_client(None)      # no client: nothing to check
    """
    if client is None:
        return
    status = getattr(client, "status", "running")
    if status not in ("running", "connecting", "newly-created"):
        raise RuntimeError(f"The Dask client is {status} (client.status == {status!r}): start a new Client "
                           "(dask.distributed.Client(...)) or leave client= out to run on this machine.")
    if engine is not None and getattr(engine, "_extras", None):
        raise NotImplementedError(
            "client= does not support models with extra_inputs= yet (their per-image values would have to travel "
            "with each shard); run this call without client=, streamed on one machine.")


def _cluster_lost(client: Any, exc: BaseException | None = None) -> RuntimeError:
    status = getattr(client, "status", "?")
    cause = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
    return RuntimeError(f"The Dask cluster was lost during the class examples' pass (client status {status!r})"
                        f"{cause}. Check the scheduler and workers, then run again, or run without client=.")


def project_on_cluster(client: Any, engine: Any, source: Any, class_index: int,
                       spaces: dict[str, dict[str, ProjectionSpace]], *,
                       shards_per_worker: int = 4) -> dict[str, dict[str, Projections]]:
    """:func:`probes.streaming.project_batches` over ``engine.stream(source, class_index)``, computed on a
    Dask cluster: the examples are cut into shards (whole batches), each worker projects its shards, and
    the shards' projections are merged in order.

    Examples
    --------
    >>> from dask.distributed import Client     # the optional [distributed] extra  # doctest: +SKIP
    >>> proj = project_on_cluster(Client(), engine, images, 0, spaces)  # a Dask cluster  # doctest: +SKIP
    >>> proj["conv2"]["flat"].summary.n == len(images)         # after the cluster run above  # doctest: +SKIP
    True
    """
    check_client(client, engine)
    n = len(source)
    if n == 0:
        return project_batches([], spaces)
    workers = max(1, len(client.scheduler_info().get("workers", {})))
    batches = math.ceil(n / engine.batch_size)
    per_shard = max(1, math.ceil(batches / (workers * shards_per_worker))) * engine.batch_size
    layers = tuple(engine.layers)
    model = model_payload(engine.model)
    done: dict[int, Any] = {}
    todo = list(range(0, n, per_shard))
    for _ in range(SHARD_ATTEMPTS):
        if getattr(client, "status", "running") not in ("running", "connecting"):
            raise _cluster_lost(client)      # closed meanwhile: its shards were cancelled, not lost
        try:
            payload = _shared(client, engine, "model", model)
            spaces_future = _shared(client, engine, "spaces", spaces)
        except (OSError, AttributeError) as exc:    # CommClosedError is an OSError; a closed client's is None
            raise _cluster_lost(client, exc) from None
        futures = {start: client.submit(_project_shard, payload, engine.fingerprint, layers, engine.target,
                                        engine.batch_size, int(getattr(engine, "output_index", 0)),
                                        shard_source(source, start, min(n, start + per_shard)), int(class_index),
                                        spaces_future, pure=False)
                   for start in todo}
        _wait(futures.values())
        for start, future in futures.items():
            if future.status == "finished":
                done[start] = future.result()
            elif future.status == "error":
                future.result()      # the task's own error: raised as it is
        todo = [start for start in todo if start not in done]
        if not todo:
            break
        # A shard cancelled or lost with a worker that died at the wrong moment (Dask could not rerun it, e.g.
        # the scattered model went with the worker): scatter again and resubmit only those shards.
        engine.__dict__.pop("_dask_scattered", None)
    if todo:
        raise RuntimeError(f"{len(todo)} shard(s) of the class examples were lost on the cluster {SHARD_ATTEMPTS} "
                           "times (workers dying?); check the cluster's logs, or run without client=.")
    parts = [done[start] for start in sorted(done)]
    merged: dict[str, dict[str, Projections]] = {}
    for part in parts:
        for layer, by_space in part.items():
            for name, proj in by_space.items():
                proj.attach(spaces[layer][name])
                by_name = merged.setdefault(layer, {})
                if name in by_name:
                    by_name[name].merge(proj)
                else:
                    by_name[name] = proj
    return merged
