"""Ray as the engine where one machine is not enough (``--backend ray``).

The driver keeps its plan (what is new or changed) and writes the dataset's files as the local
pool does; Ray runs the same per-task functions on actors that load their model once
(:func:`run_ordered`). Only paths, face rows and vectors travel, never decoded frames: a task
is a file (a video is one unit: decode, detect, track) or a batch of crop paths. An actor that
dies is restarted and its task retried (``RETRIES``); a task that still fails comes back as its
exception, so the caller records the file like a bad photo and goes on.

Workers must be able to import crowdsort and read the dataset's folder (one machine, or a
shared file system).
"""
from __future__ import annotations

import logging
import os
from collections import deque

log = logging.getLogger(__name__)

RETRIES = 3
IN_FLIGHT = 2  # tasks queued per actor: the next one is ready when a result comes back


def connect(address: str | None = None, num_cpus: int | None = None):
    """``ray`` after ``ray.init``: the cluster at ``address`` (or ``$RAY_ADDRESS``), else a local one."""
    try:
        import ray
    except ImportError:
        raise ImportError("--backend ray needs ray: pip install 'crowdsort[ray]'") from None
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        kwargs = {} if address else {"num_cpus": num_cpus, "include_dashboard": False,
                                     "_node_ip_address": "127.0.0.1"}
        ray.init(address=address, log_to_driver=False, configure_logging=False, **kwargs)
    return ray


def gpus_per_actor(ray, actors: int, requested: float | None = None) -> float:
    """GPUs each actor asks for: ``requested``, else the cluster's GPUs shared among the actors
    (at most one each; 0 where it has none)."""
    if requested is not None:
        return max(0.0, float(requested))
    total = ray.cluster_resources().get("GPU", 0)
    return min(1.0, total / max(1, actors)) if total else 0.0


def for_actors(embedder, actors: int, address: str | None = None, gpus: float | None = None):
    """``(embedder, GPUs per actor)`` for ``actors`` actors of the cluster at ``address``: an
    embedder whose ONNX Runtime would take every core gets its share of this machine's cores
    (actors of one machine share them)."""
    import copy

    from .embed import _cores

    share = gpus_per_actor(connect(address), actors, gpus)
    if getattr(embedder, "threads", 0) is None:
        embedder = copy.copy(embedder)
        embedder.threads = max(1, _cores() // actors)
    return embedder, share


def _runner_class(ray):
    @ray.remote(max_restarts=RETRIES, max_task_retries=RETRIES)
    class Runner:
        """One worker: ``init(*init_args)`` once (the model loaded), then ``work(task)`` per task."""

        def __init__(self, init, init_args, env):
            os.environ.update(env)
            if init is not None:
                init(*init_args)

        def run(self, work, task):
            return work(task)
    return Runner


def run_ordered(tasks, work, init=None, init_args=(), actors: int = 1, address: str | None = None,
                num_cpus: int | None = None, num_gpus: float = 0.0):
    """Yield ``(task, result)`` in the order of ``tasks``; ``result`` is the exception where a
    task failed on every retry. ``work`` and ``init`` are module-level functions (Ray ships them by
    reference). ``num_gpus``: each actor's share of a GPU (Ray sets its CUDA_VISIBLE_DEVICES)."""
    ray = connect(address, num_cpus)
    from ray.exceptions import RayError

    env = {k: v for k, v in os.environ.items() if k in ("GLOG_minloglevel", "TF_CPP_MIN_LOG_LEVEL", "CROWDSORT_CACHE")}
    Runner = _runner_class(ray)
    if num_gpus:
        Runner = Runner.options(num_gpus=num_gpus)
    pool = [Runner.remote(init, init_args, env) for _ in range(max(1, actors))]
    pending: deque = deque()
    todo = iter(enumerate(tasks))

    def submit() -> None:
        for i, task in todo:
            pending.append((task, pool[i % len(pool)].run.remote(work, task)))
            return
    for _ in range(IN_FLIGHT * len(pool)):
        submit()
    try:
        while pending:
            task, ref = pending.popleft()
            try:
                result = ray.get(ref)
            except RayError as e:
                log.warning("ray: a task failed on every retry: %s", e)
                result = e
            submit()
            yield task, result
    finally:
        for a in pool:
            ray.kill(a)
