"""Run a batch on Ray: connect, plan, ``read_binary_files`` → ``map_batches`` → outcomes."""
from __future__ import annotations

import logging
import time
import warnings
from typing import Callable, Iterable

from ..errors import ConfigError, MissingDependencyError
from .config import BatchConfig
from .plan import BatchItem, existing_outputs, filesystem, list_images, mirror_items
from .report import BatchReport, ImageOutcome

__all__ = ["connect", "run_batch", "cloak_dataset"]

log = logging.getLogger(__name__)


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise MissingDependencyError("Ray Data is not installed",
                                     hint='pip install "nullswap-sdk[ray]"') from None
    return ray


def connect(address: str | None = "local", *, num_cpus: int | None = None) -> bool:
    """Join a Ray cluster; True when this call started one (then ``ray.shutdown()`` is yours).

    ``address``: ``"local"`` (or None) starts a cluster on this machine with ``num_cpus``
    (default: all cores); ``"auto"`` joins the cluster ``ray start`` runs here; anything else
    is a cluster address (``HOST:6379`` or ``ray://HOST:10001``). An already initialised Ray
    is used as it is.
    """
    ray = _ray()
    if ray.is_initialized():
        return False
    try:
        if address in (None, "local"):
            ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)
        else:
            ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise ConfigError(f"cannot connect to the Ray cluster at {address!r}: {e}",
                          hint="start one with `ray start --head`, pass its HOST:6379, or use 'local'") from None
    return True


def _pool(ray, config: BatchConfig) -> tuple[int, float]:
    """(actors, GPUs per actor) for the cluster we are connected to."""
    resources = ray.cluster_resources()
    gpus = float(resources.get("GPU", 0))
    if gpus > 0:
        return config.workers or int(gpus * config.workers_per_gpu), 1.0 / config.workers_per_gpu
    cpus = float(resources.get("CPU", 1))
    return config.workers or max(1, int(cpus // config.cpus_per_worker)), 0.0


def run_batch(items: list[BatchItem], config: BatchConfig, *, in_fs=None, out_fs=None,
              progress: bool = False, worker_cls=None,
              on_outcome: Callable[[ImageOutcome], None] | None = None) -> BatchReport:
    """Cloak ``items`` on the connected cluster (call ``connect`` first) and return the report.

    Outputs that exist when the job starts follow ``config.existing`` (and are reported, not
    passed to ``on_outcome``). ``on_outcome`` sees each processed image as its batch finishes
    (e.g. to log or time it). ``worker_cls`` may be a ``CloakWorker`` subclass.
    Images whose batch failed beyond ``config.max_retries`` (a worker that kept dying) are
    reported as failed, never silently dropped.
    """
    from pyarrow import fs as pafs

    from .worker import CloakWorker

    ray = _ray()
    if not ray.is_initialized():
        raise ConfigError("Ray is not connected", hint="call nullswap_sdk.distributed.connect() first")
    in_fs = in_fs or pafs.LocalFileSystem()
    out_fs = out_fs or pafs.LocalFileSystem()
    t0 = time.perf_counter()
    by_path: dict[str, ImageOutcome] = {}
    todo = items
    if config.existing != "overwrite":
        exists = existing_outputs(out_fs, items)
        todo = [it for it in items if it.dst not in exists]
        for it in items:
            if it.dst in exists:
                by_path[it.path] = _existing_outcome(it, config)
    actors, gpu_share = _pool(ray, config)
    if todo:
        label = {it.path: it.label for it in todo}
        for row in _execute(ray, todo, config, in_fs, out_fs, actors, gpu_share,
                            worker_cls or CloakWorker, progress):
            o = ImageOutcome(label[row.src], row.dst, row.status, row.faces, row.error)
            by_path[row.src] = o
            if on_outcome:
                on_outcome(o)
    outcomes = []
    for it in items:
        o = by_path.get(it.path)
        if o is None:
            o = ImageOutcome(it.label, it.dst, "failed", error=(
                "not processed: its worker died more often than max_retries allows "
                "(hint: check the worker logs, e.g. for out-of-memory kills)"))
            if on_outcome:
                on_outcome(o)
        outcomes.append(o)
    return BatchReport(outcomes, seconds=time.perf_counter() - t0, workers=actors)


def _existing_outcome(it: BatchItem, config: BatchConfig) -> ImageOutcome:
    if config.existing == "skip":
        return ImageOutcome(it.label, it.dst, "skipped")
    from ..errors import OutputExistsError

    e = OutputExistsError(f"{it.dst} already exists", hint="choose another -o, or pass --overwrite")
    return ImageOutcome(it.label, it.dst, "failed", error=str(e))


def _execute(ray, todo, config, in_fs, out_fs, actors, gpu_share, worker_cls, progress) -> Iterable[ImageOutcome]:
    from ray.data import DataContext
    from tqdm import tqdm

    ctx = DataContext.get_current()
    saved = (ctx.max_errored_blocks, ctx.enable_progress_bars, ctx.enable_operator_progress_bars)
    # A block whose worker died beyond the retries is dropped, not fatal: its images are
    # reported as failed by run_batch. Bad images never raise (they are outcomes).
    ctx.max_errored_blocks = -1
    ctx.enable_progress_bars = ctx.enable_operator_progress_bars = False
    targets = ray.put({it.path: (it.label, it.dst) for it in todo})
    blocks = min(len(todo), max(actors, -(-len(todo) // config.batch_size)), 10_000)
    try:
        ds = ray.data.read_binary_files(
            [it.path for it in todo], include_paths=True, filesystem=in_fs,
            # I/O only: no core of its own (never waits for one the actors hold), but a bounded
            # number of readers, else Ray starts a worker process per pending read task.
            num_cpus=0, concurrency=actors, override_num_blocks=blocks)
        map_args = dict(batch_size=config.batch_size, batch_format="numpy",
                        fn_constructor_kwargs={"config": config, "targets_ref": [targets], "out_fs": out_fs},
                        compute=ray.data.ActorPoolStrategy(size=actors),
                        num_cpus=config.cpus_per_worker, num_gpus=gpu_share or None)
        with warnings.catch_warnings():
            # Bounded restarts have no named map_batches parameter yet (Ray 2.60); Ray Data's
            # own default, unbounded, would retry an image that kills its worker forever.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            try:
                ds = ds.map_batches(worker_cls, max_restarts=config.max_retries,
                                    max_task_retries=config.max_retries, **map_args)
            except TypeError:  # a Ray that dropped them: its default (retry until done) applies
                ds = ds.map_batches(worker_cls, **map_args)
        with tqdm(total=len(todo), desc="cloak", unit="img", disable=not progress) as bar:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for path, dst, status, faces, error in zip(*(batch[k] for k in
                                                            ("path", "dst", "status", "faces", "error"))):
                    yield ImageOutcome(str(path), str(dst), str(status), int(faces), str(error))
                    bar.update(1)
    finally:
        ctx.max_errored_blocks, ctx.enable_progress_bars, ctx.enable_operator_progress_bars = saved


def cloak_dataset(src: str, dst: str, *, config: BatchConfig | None = None, address: str | None = "local",
                  progress: bool = True) -> BatchReport:
    """Cloak every image under ``src`` into a mirrored tree under ``dst`` on a Ray cluster.

    ``src`` / ``dst``: local folders (a file works for ``src``) or URIs pyarrow filesystems
    handle (``s3://bucket/photos``). ``address``: see ``connect``; a cluster this call starts
    is shut down at the end. Rerunning resumes: outputs already written are skipped
    (``config.existing``). Returns a ``BatchReport``; bad images are in it, not raised.
    """
    config = config or BatchConfig()
    in_fs, in_path = filesystem(src)
    out_fs, out_path = filesystem(dst)
    files, root = list_images(in_fs, in_path)
    same_fs = in_fs.type_name == out_fs.type_name
    items = mirror_items(files, root, out_path, same_fs=same_fs, in_uri=src)
    started = connect(address)
    try:
        return run_batch(items, config, in_fs=in_fs, out_fs=out_fs, progress=progress)
    finally:
        if started:
            _ray().shutdown()
