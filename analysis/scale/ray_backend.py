"""Ray as the engine where one machine is not enough (``--backend ray``).

The driver keeps its plan (what is new or changed) and writes the dataset's files as the local
pool does; Ray Data runs the same per-task functions (:func:`run_ordered`): the tasks are a
dataset of a row each (in blocks of up to ``PER_BLOCK``), mapped by a pool of actors that load
their model once (``init``) and ask for a share of a GPU where the cluster has them; the
results stream back to the driver in task order (``preserve_order``, never materialised).
Only paths, face rows and vectors travel, never decoded frames: a task is a file (a video is
one unit: decode, detect, track) or a batch of crop paths. A task's error comes back as its
exception; an actor that dies is restarted and its block retried (``RETRIES``); the tasks of a
block that still fails are run again one by one, and the one that still kills its worker comes
back as :class:`TaskLost`, so the caller records the file like a bad photo and goes on.

Workers must be able to import crowdsort and read the dataset's folder (one machine, or a
shared file system).
"""
from __future__ import annotations

import logging
import os
import warnings

log = logging.getLogger(__name__)

RETRIES = 3
PER_BLOCK = 32  # tasks a block at most: Ray Data's cost is per block (tens of ms on two busy cores)
_ENV = ("GLOG_minloglevel", "TF_CPP_MIN_LOG_LEVEL", "CROWDSORT_CACHE")  # what the actors inherit


class TaskLost(RuntimeError):
    """A task whose worker died on each of its tries (its process killed, out of memory...)."""


ANSWER_S = 5.0  # seconds a cluster's address has to accept a connection


class RayConnectError(ConnectionError):
    """The Ray cluster asked for cannot be reached or refuses us; the message says what to do."""


def connect(address: str | None = None, num_cpus: int | None = None):
    """``ray`` after ``ray.init``: the cluster at ``address`` (or ``$RAY_ADDRESS``), else a new local one.

    A new local one really is new: ``ray.init()`` without an address would attach to whatever
    cluster a leftover ``ray_current_cluster`` file names, and retry for ever when that head is
    gone. A given address must accept a connection within ``ANSWER_S`` seconds, else one line
    names it; a cluster that refuses us after that is most often one with token authentication
    (Ray 2.59 turns it on for local clusters), said with Ray's own settings for it."""
    try:
        import ray
    except ImportError:
        raise ImportError("--backend ray needs ray: pip install 'crowdsort[ray]'") from None
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address in (None, "local"):
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                     log_to_driver=False, configure_logging=False)
            return ray
        _answers(address)
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise RayConnectError(_refused(address, e)) from None
    return ray


def host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a Ray address (``host:port``, ``ray://host:port``); None for ``auto``."""
    rest = address.split("://", 1)[-1].rstrip("/")
    if rest == "auto" or ":" not in rest:
        return None
    host, _, port = rest.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise RayConnectError(f"Ray address {address!r} is not host:port (e.g. 127.0.0.1:6379)") from None


def _answers(address: str) -> None:
    import socket

    hp = host_port(address)
    if hp is None:
        return
    try:
        socket.create_connection(hp, timeout=ANSWER_S).close()
    except OSError as e:
        raise RayConnectError(
            f"the Ray cluster at {address} does not answer ({e.strerror or e}); start it (ray start --head) "
            "or leave out --ray-address and RAY_ADDRESS for a local cluster") from None


def _refused(address: str, e: Exception) -> str:
    token = os.environ.get("RAY_AUTH_MODE") == "token"
    why = " ".join(str(e).split())[:200]
    if token:
        return (f"the Ray cluster at {address} refused the connection ({why}); with RAY_AUTH_MODE=token the "
                "token must be the cluster's: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token "
                "(ray get-auth-token on the head node prints it)")
    return (f"the Ray cluster at {address} refused the connection ({why}); if it uses token authentication "
            "(the default for clusters of Ray 2.59 and later), set RAY_AUTH_MODE=token and give its token in "
            "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token (ray get-auth-token on the head node)")


class _Count:
    def __init__(self):
        self.n = 0

    def add(self, n: int) -> None:
        self.n += n

    def total(self) -> int:
        return self.n


class RayCount:
    """A count the actors add to and the driver reads (video frames decoded, for the progress
    bar), kept by a small actor of its own: workers may be on other machines."""

    def __init__(self, ray):
        self._actor = ray.remote(num_cpus=0)(_Count).remote()

    def add(self, n: int) -> None:
        self._actor.add.remote(n)  # not waited for: a bar may lag, decoding must not

    @property
    def value(self) -> int:
        import ray

        return ray.get(self._actor.total.remote())


def frame_count(address: str | None = None) -> RayCount:
    return RayCount(connect(address))


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

    from .workers import cores

    share = gpus_per_actor(connect(address), actors, gpus)
    if getattr(embedder, "threads", 0) is None:
        embedder = copy.copy(embedder)
        embedder.threads = max(1, cores() // actors)
    return embedder, share


def _pickled(result):
    from ray import cloudpickle

    try:
        return cloudpickle.dumps(result)
    except Exception:  # an exception that does not pickle comes back as its text
        return cloudpickle.dumps(RuntimeError(f"{type(result).__name__}: {result}"))


class _Runner:
    """One actor of the pool: ``init(*init_args)`` once (the model loaded), then ``work(task)``
    per row; a task's exception is its result, so one bad file is not the end of the run."""

    def __init__(self, work, init, init_args, env):
        os.environ.update(env)
        self.work = work
        if init is not None:
            init(*init_args)

    def __call__(self, batch):
        import numpy as np
        from ray import cloudpickle

        out = []
        for blob in batch["task"]:
            try:
                result = self.work(cloudpickle.loads(blob))
            except Exception as e:
                result = e
            out.append(_pickled(result))
        return {"i": batch["i"], "result": np.array(out, dtype=object)}


def _quiet_context(ray):
    """Ray Data's context for these runs: results in task order, no console bars or banners (the
    caller's tqdm bar is the progress), a block whose task failed on every retry skipped (the
    driver reports its task) rather than the run aborted, and no limit on a long task (an hour
    of video is one task)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.max_errored_blocks = -1
    ctx.execution_no_progress_timeout_s = -1
    for h in logging.getLogger("ray.data").handlers:  # its log file (ray-data.log) keeps all
        # Ray's own console handler only: a handler of the host (pytest's, an application's) that
        # Ray Data picked up is shared with every other logger and must keep its level
        if type(h).__module__.startswith("ray.") and "File" not in type(h).__name__:
            h.setLevel(logging.CRITICAL)  # a skipped block is reported below, per task
    return ray.data


def run_ordered(tasks, work, init=None, init_args=(), actors: int = 1, address: str | None = None,
                num_cpus: int | None = None, num_gpus: float = 0.0):
    """Yield ``(task, result)`` in the order of ``tasks``; ``result`` is the exception where a
    task raised, or :class:`TaskLost` where its worker died on every retry. ``work`` and ``init``
    are module-level functions (Ray ships them by reference). ``actors``: the pool's size;
    ``num_gpus``: each actor's share of a GPU (Ray sets its CUDA_VISIBLE_DEVICES)."""
    ray = connect(address, num_cpus)
    tasks = list(tasks)
    if tasks:
        # alone, a task that kills its worker has no neighbour to take with it: no second run
        yield from _run(ray, tasks, (work, init, init_args), actors, num_gpus, rescue=len(tasks) > 1)


def _run(ray, tasks, udf, actors, num_gpus, rescue):
    """:func:`run_ordered` on Ray Data. A block (``PER_BLOCK`` tasks at most, fewer where each
    actor would get under 4 blocks) is the unit Ray schedules and retries, and its results reach
    the driver together. A block whose worker died on every retry is skipped by Ray Data; then
    this pool stops (its actors give their CPUs and GPUs back), the skipped tasks are run again,
    one a block and one in flight (``rescue``), so a file that kills its worker takes none of
    its neighbours with it, and a new pool goes on after them."""
    done = 0
    while done < len(tasks):
        base, after = done, None
        rows = _rows(ray, tasks[base:], udf, actors, num_gpus, one_by_one=not rescue)
        try:
            for i, result in rows:
                if base + i > done:  # tasks[done:base + i] were skipped
                    after = (base + i, result)
                    break
                done = base + i + 1
                yield tasks[base + i], result
        finally:
            rows.close()
        end = after[0] if after else len(tasks)
        if rescue:
            yield from _run(ray, tasks[done:end], udf, 1, num_gpus, rescue=False)
        else:
            for task in tasks[done:end]:
                log.warning("ray: a task failed on every retry: its worker died (see Ray's ray-data.log)")
                yield task, TaskLost(f"its Ray worker died on each of {RETRIES + 1} tries")
        done = end
        if after:
            yield tasks[end], after[1]
            done = end + 1


def _rows(ray, tasks, udf, actors, num_gpus, one_by_one):
    """``(index, result)`` of ``tasks`` in order, from a Ray Data actor pool; a skipped block's
    tasks are missing. Closing it stops the pool."""
    from ray import cloudpickle

    data = _quiet_context(ray)
    actors = max(1, min(actors, len(tasks)))
    per_block = 1 if one_by_one else max(1, min(PER_BLOCK, len(tasks) // (4 * actors)))
    cpus = ray.cluster_resources().get("CPU", 1)
    env = {k: v for k, v in os.environ.items() if k in _ENV}
    ctx = data.DataContext.get_current()
    in_flight, ctx.max_tasks_in_flight_per_actor = ctx.max_tasks_in_flight_per_actor, 1 if one_by_one else None
    try:  # the dataset keeps the context it was made in
        ds = data.from_items([{"i": i, "task": cloudpickle.dumps(t)} for i, t in enumerate(tasks)],
                             override_num_blocks=-(-len(tasks) // per_block))
    finally:
        ctx.max_tasks_in_flight_per_actor = in_flight
    with warnings.catch_warnings():  # Ray Data has no other way to bound a task's retries (its own: none)
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        ds = ds.map_batches(_Runner, batch_size=per_block, batch_format="numpy", concurrency=actors,
                            fn_constructor_args=(*udf, env), num_cpus=min(1.0, cpus / actors),
                            num_gpus=num_gpus or None, max_restarts=-1, max_task_retries=RETRIES)
    rows = iter(ds.iter_rows())
    try:
        for row in rows:
            yield int(row["i"]), cloudpickle.loads(row["result"])
    finally:  # stopped early (a skipped block, Ctrl-C, SIGTERM): the pool goes with it
        close = getattr(rows, "close", None)
        if close is not None:
            close()
