"""The Ray executor (extra ``ray``): each piece of work runs as one Ray task.

A piece of work is a sweep config or a calibration shard (whatever a caller maps over).
Import this module only when ``--executor ray`` is asked for: ``import quantkit`` never imports
ray. Without ``address`` a local Ray instance is started on first use and shut down by
:meth:`RayExecutor.close` (or the ``with`` block); with an address (``ray start --head`` prints
one; ``auto`` finds a running one) the executor connects to that cluster and leaves it running.

Tasks receive their function and item through Ray's serializer (cloudpickle), so closures work.
Paths inside the work (model, data, output folder) must be valid on the node that runs the
task: on a multi-node cluster, use a shared file system (see ``docs/ray.md``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from quantkit.errors import MissingExtraError, PipelineError

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise MissingExtraError("--executor ray", "ray", "ray") from err
    return ray


def _call(fn: Callable[[Any], Any], item: Any) -> Any:
    return fn(item)


class RayExecutor:
    """Runs each item as a Ray task; yields results on the driver as tasks finish.

    Args:
        address: Ray cluster address (``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``); default:
            start a local instance.
        num_cpus: CPUs of the local instance started without ``address`` (default: all).
        task_cpus: CPUs reserved per task (Ray schedules no more tasks than fit).
        task_gpus: GPUs reserved per task: ``1`` makes every engine build / latency run hold
            a whole GPU, so that measurements never share one.
        runtime_env: Ray ``runtime_env`` for the connection (e.g. ``{"pip": [...]}``).
        max_retries: Ray retries of a task whose worker died (default 0: a failure is
            reported, as with the local executor).
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None,
                 task_cpus: float = 1, task_gpus: float = 0,
                 runtime_env: dict[str, Any] | None = None, max_retries: int = 0) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.task_cpus = task_cpus
        self.task_gpus = task_gpus
        self.runtime_env = runtime_env
        self.max_retries = max_retries
        self._owns = False
        self._ray: Any = None

    def start(self) -> Any:
        """Connect to (or start) Ray; return the ``ray`` module."""
        if self._ray is not None:
            return self._ray
        ray = _import_ray()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False,
                                      "logging_level": logging.WARNING}
            if self.address is None and self.num_cpus is not None:
                kwargs["num_cpus"] = self.num_cpus
            if self.runtime_env is not None:
                kwargs["runtime_env"] = self.runtime_env
            if self.address is not None:
                kwargs.pop("include_dashboard")  # a setting of the head node, not of a client
            # "local": a new instance, never one a `ray start` left running on this machine
            try:
                ray.init(address=self.address or "local", **kwargs)
            except ConnectionError as err:
                raise PipelineError(
                    f"--ray-address {self.address}: cannot connect to the Ray cluster ({err}). "
                    "Check the address that `ray start --head` printed; a cluster with token "
                    "authentication (the default of recent Ray) also needs RAY_AUTH_MODE=token "
                    "and its token (~/.ray/auth_token or RAY_AUTH_TOKEN) on this machine."
                ) from err
            self._owns = True
        self._ray = ray
        return ray

    def close(self) -> None:
        """Shut down the Ray instance if this executor started (or connected) it."""
        if self._ray is not None and self._owns:
            self._ray.shutdown()
        self._ray, self._owns = None, False

    def __enter__(self) -> RayExecutor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def parallelism(self) -> int:
        """How many tasks the cluster runs at once (its CPUs / ``task_cpus``, GPUs likewise)."""
        ray = self.start()
        res = ray.cluster_resources()
        n = int(res.get("CPU", 1) // self.task_cpus) if self.task_cpus else 1 << 30
        if self.task_gpus:
            n = min(n, int(res.get("GPU", 0) // self.task_gpus))
        return max(1, n)

    def map_unordered(self, fn: Callable[[T], R],
                      items: Iterable[T]) -> Iterator[tuple[T, R | BaseException]]:
        """Submit every item as a task; yield ``(item, result or exception)`` as they finish.

        A task's exception is returned as the original exception (not Ray's wrapper), so that
        callers record the same error text as with the local executor.
        """
        ray = self.start()
        remote = ray.remote(num_cpus=self.task_cpus, num_gpus=self.task_gpus,
                            max_retries=self.max_retries)(_call)
        fn_ref = ray.put(fn)
        pending: dict[Any, T] = {}
        for item in items:
            pending[remote.remote(fn_ref, item)] = item
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                ref = ready[0]
                item = pending.pop(ref)
                try:
                    result: R | BaseException = ray.get(ref)
                except ray.exceptions.RayTaskError as err:
                    cause = getattr(err, "cause", None)
                    result = cause if isinstance(cause, BaseException) else err
                except ray.exceptions.RayError as err:  # worker died, object lost...
                    result = err
                yield item, result
        finally:
            for ref in pending:  # interrupted: do not leave work running on the cluster
                ray.cancel(ref, force=True)
