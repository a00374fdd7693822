"""Run the pending cells of a grid: ``local`` (in-process or ``jobs`` processes) or ``ray``.

Every executor follows the same schedule: a cell starts only once its ``parent`` is done (a
shared clean cell before the attack cells of its recipe, an attack cell before its defenses),
and a finished cell's dependants go to the front of the queue, so rows complete early. Each
cell is submitted once, so no two workers ever compute the same (e.g. clean) cell. When a cell
fails, everything that waits for it is skipped. Finished cells are skipped, so a rerun after
a kill computes only what is missing. The worker that computes a cell also writes its
``cell.json`` (atomically, :meth:`Cache.mark_done`), so a result survives the death of the
driver; with Ray on a cluster, ``OUT`` must therefore be on a filesystem shared by every node.

A cell function ``fn(cell, cells_root, options) -> dict`` computes one cell and returns its
result metrics; the default, :func:`compute_cell`, calls ``distox.experiment.run_clean`` /
``run_attack`` / ``run_defense``. Tests inject their own.

Example:
    >>> summary = execute(grid, Cache("runs/smoke"), executor="local", jobs=2)
    >>> summary.computed, summary.failed
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from ..progress import progress_bar
from .cache import Cache
from .config import BenchError
from .grid import CLEAN_LABEL, Cell, Grid

log = logging.getLogger(__name__)
#: Result key through which a cell function reports seconds already spent on it (a defense that
#: an earlier, interrupted grid run finished): the cell's recorded wall time is at least that.
SPENT = "_spent_seconds"

EXECUTORS = ("local", "ray")


@dataclass
class RunOptions:
    """Machine-side options of a cell (never part of a cell key).

    Args:
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ... (``"auto"``).
        data_root: where datasets live (None: the standard locations).
        threads: torch CPU threads in the worker (None: leave torch's default).
        progress: inner per-epoch progress bars (False: only the bench's bar).
    """

    device: str = "auto"
    data_root: str | None = None
    threads: int | None = None
    progress: bool = False


CellFunction = Callable[[Cell, Path, RunOptions], dict[str, Any]]


def _metrics(d: dict[str, Any]) -> dict[str, float]:
    return {k: float(d[k]) for k in ("acc", "asr", "ra", "clean_acc", "clean_asr", "clean_ra") if isinstance(d.get(k), (int, float))}


def compute_cell(cell: Cell, cells_root: Path, options: RunOptions) -> dict[str, Any]:
    """The real cell function: train the clean model (clean cells) or the backdoored one
    (attack cells), or purify it (defense cells) through :mod:`distox.experiment`, in
    ``cells_root/<key>``.

    Returns ``{"acc", "asr", "ra"}`` (percent) of the attack's or the purified model, ``{"acc"}``
    of a clean model. An attack cell with a shared clean cell (its ``parent``) adds
    ``clean_acc``, ``clean_asr`` and ``clean_ra``: that clean model on this attack's test sets.
    """
    from .. import experiment

    out = cells_root / cell.key
    if cell.kind == "clean":
        spec = experiment.AttackSpec(attack=CLEAN_LABEL, **{**cell.config, "data_root": options.data_root})
        return _metrics(experiment.run_clean(spec, out, device=options.device, progress=options.progress))
    if cell.kind == "attack":
        return _attack_metrics(cell, cells_root, options)
    d = dict(cell.config["defense"])
    eval_every = d.pop("eval_every", None)
    spec = experiment.DefenseSpec(**d)
    rec = experiment.run_defense(cells_root / cell.config["attack"], spec, out, force=True,
                                 device=options.device, progress=options.progress,
                                 track_epochs=eval_every is not None, eval_every=eval_every or 1,
                                 warn=False,  # recorded in defense.json; a grid prints no per-cell warnings
                                 clean_asr=_clean_asr(cells_root, cell.config["attack"]))
    after = rec.get("after") or rec.get("metrics", {}).get("after") or rec
    result = _metrics(after)
    if rec.get("seconds") is not None:  # what the defense cost, also when an earlier interrupted grid run finished it
        result[SPENT] = float(rec["seconds"])
    if not {"acc", "asr"} <= set(result):
        raise BenchError(f"run_defense returned no after-defense ACC/ASR for cell {cell.key}")
    return result


def _clean_asr(cells_root: Path, attack_key: str) -> float | None:
    """The clean reference's ASR on an attack cell's triggers, from that cell's record (a shared
    clean cell is scored there, not in the attack's run directory), or None."""
    rec = Cache(cells_root.parent).load(attack_key)
    value = (rec or {}).get("result", {}).get("clean_asr")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _attack_metrics(cell: Cell, cells_root: Path, options: RunOptions) -> dict[str, float]:
    """Train an attack cell's model; with a shared clean cell, score that clean model on the
    attack's own test sets instead of training one in the cell (``clean_reference``)."""
    from .. import experiment

    out = cells_root / cell.key
    spec = experiment.AttackSpec.from_dict({**cell.config, "data_root": options.data_root})
    if cell.parent is None:
        return _metrics(experiment.run_attack(spec, out, device=options.device, progress=options.progress))
    clean_model = cells_root / cell.parent / experiment.MODEL_FILE
    if not clean_model.is_file():
        raise BenchError(f"attack cell {cell.key} needs the clean model of cell {cell.parent}, "
                         f"which is missing ({clean_model})")
    # force: a directory of this key left by an interrupted run that trained its own clean
    # model (before clean cells were shared) holds the same spec but clean_reference; restart it
    metrics = experiment.run_attack(dataclasses.replace(spec, clean_reference=False), out, force=True,
                                    device=options.device, progress=options.progress)
    run = experiment.load_run(out, device=options.device)
    metrics.update(experiment.score_clean_model(clean_model, run.spec, run.data, run.backdoor_test_set(),
                                                device=options.device))
    return _metrics(metrics)


def run_one(fn: CellFunction, cell: Cell, root: str, options: RunOptions) -> tuple[str, dict[str, Any], float]:
    """Compute one cell and mark it done in the cache under ``root``; runs in the worker."""
    if options.threads:
        import torch

        torch.set_num_threads(options.threads)
    cache = Cache(root)
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn(cell, cache.cells_root, options)
    # a cell whose work was done by an earlier, interrupted grid run reports that run's seconds
    seconds = max(time.perf_counter() - t0, float(result.pop(SPENT, 0.0)))
    cache.mark_done(cell, result, seconds, cpu_seconds=time.process_time() - c0)
    return cell.key, result, seconds


@dataclass
class BenchSummary:
    """What one :func:`execute` call did."""

    total: int = 0
    cached: list[str] = field(default_factory=list)
    computed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # cells waiting for failed cells
    cell_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped


# ---------------------------------------------------------------------------- backends
class _Sequential:
    capacity = 1

    def __init__(self, fn: CellFunction, root: str, options: RunOptions) -> None:
        self.fn, self.root, self.options = fn, root, options
        self.queue: list[Cell] = []

    def submit(self, cell: Cell) -> None:
        self.queue.append(cell)

    def running(self) -> int:
        return len(self.queue)

    def wait_any(self) -> tuple[Cell, Any, BaseException | None]:
        cell = self.queue.pop(0)
        try:
            return cell, run_one(self.fn, cell, self.root, self.options), None
        except Exception as exc:  # noqa: BLE001 - reported per cell
            return cell, None, exc

    def close(self, cancel: bool) -> None:
        self.queue.clear()


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


class _Processes:
    def __init__(self, fn: CellFunction, root: str, options: RunOptions, jobs: int,
                 mp_context: str = "spawn") -> None:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        self.capacity = jobs
        threads = options.threads or max(1, (os.cpu_count() or 1) // jobs)
        self.pool = ProcessPoolExecutor(jobs, mp_context=mp.get_context(mp_context),
                                        initializer=_init_worker, initargs=(threads,))
        self.fn, self.root, self.options = fn, root, options
        self.futures: dict[Any, Cell] = {}

    def submit(self, cell: Cell) -> None:
        self.futures[self.pool.submit(run_one, self.fn, cell, self.root, self.options)] = cell

    def running(self) -> int:
        return len(self.futures)

    def wait_any(self) -> tuple[Cell, Any, BaseException | None]:
        from concurrent.futures import FIRST_COMPLETED, wait

        done, _ = wait(list(self.futures), return_when=FIRST_COMPLETED)
        fut = next(iter(done))
        cell = self.futures.pop(fut)
        exc = fut.exception()
        return cell, None if exc else fut.result(), exc

    def close(self, cancel: bool) -> None:
        self.pool.shutdown(wait=not cancel, cancel_futures=cancel)


class _Ray:
    """Cells as Ray tasks (``num_gpus``/``num_cpus`` per task). Starts a local Ray instance
    when none is running and ``address`` is None (and shuts it down at the end)."""

    capacity = 1 << 30  # Ray queues tasks itself

    def __init__(self, fn: CellFunction, root: str, options: RunOptions, *, num_gpus: float = 0.0,
                 num_cpus: float = 1.0, address: str | None = None, init_kwargs: dict | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise BenchError("the ray executor needs Ray: pip install 'distox[ray]'") from None
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            kw = {"include_dashboard": False, "log_to_driver": False, **(init_kwargs or {})}
            ray.init(address=address, **kw)
            self.started = True
        self.task = ray.remote(num_gpus=num_gpus, num_cpus=num_cpus, max_retries=0)(run_one)
        self.fn, self.root, self.options = fn, root, options
        self.refs: dict[Any, Cell] = {}

    def submit(self, cell: Cell) -> None:
        self.refs[self.task.remote(self.fn, cell, self.root, self.options)] = cell

    def running(self) -> int:
        return len(self.refs)

    def wait_any(self) -> tuple[Cell, Any, BaseException | None]:
        ready, _ = self.ray.wait(list(self.refs), num_returns=1)
        cell = self.refs.pop(ready[0])
        try:
            return cell, self.ray.get(ready[0]), None
        except Exception as exc:  # noqa: BLE001 - RayTaskError wraps the cell's own error
            return cell, None, getattr(exc, "cause", None) or exc

    def close(self, cancel: bool) -> None:
        if cancel:
            for ref in self.refs:
                self.ray.cancel(ref, force=True)
        if self.started:
            self.ray.shutdown()


# ---------------------------------------------------------------------------- scheduler
def execute(grid: Grid, cache: Cache, *, executor: str = "local", jobs: int = 1,
            cell_fn: CellFunction | None = None, options: RunOptions | None = None,
            fail_fast: bool = False, progress: bool = True, num_gpus: float = 0.0,
            num_cpus: float = 1.0, ray_address: str | None = None,
            ray_init: dict | None = None, mp_context: str = "spawn") -> BenchSummary:
    """Compute every cell of ``grid`` missing from ``cache``.

    Args:
        grid: the expanded grid (:func:`distox.bench.grid.expand`).
        cache: the result store.
        executor: ``"local"`` or ``"ray"`` ("local").
        jobs: local worker processes; 1 = sequential in this process (1). With ``ray`` and
            no ``ray_address``: the CPUs of the local Ray instance when > 1.
        cell_fn: computes one cell (:func:`compute_cell`).
        options: device, data root, threads (:class:`RunOptions()`).
        fail_fast: stop at the first failed cell and raise :class:`BenchError`; otherwise
            failures are recorded (the cells waiting for them skipped) and the rest still
            runs (False).
        progress: show a bar of cells done / total with elapsed time and ETA (True).
        num_gpus, num_cpus: Ray resources per task (0, 1).
        ray_address: an existing Ray cluster (None: start a local instance).
        ray_init: extra ``ray.init`` keyword arguments (e.g. ``{"num_cpus": 2}``).
        mp_context: start method of local worker processes ("spawn": safe with torch's
            thread pools; "fork" starts faster for cells that do not use torch).

    Returns a :class:`BenchSummary`. ``KeyboardInterrupt`` stops at once; finished cells stay.
    """
    if executor not in EXECUTORS:
        raise BenchError(f"unknown executor '{executor}'; valid: {', '.join(EXECUTORS)}")
    if jobs < 1:
        raise BenchError(f"--jobs must be >= 1; got {jobs}")
    fn = cell_fn or compute_cell
    options = options or RunOptions()
    root = str(cache.root)
    t0 = time.perf_counter()
    summary = BenchSummary(total=len(grid))
    summary.cached = [c.key for c in grid.cells if cache.is_done(c)]
    done = set(summary.cached)
    waiting: dict[str, list[Cell]] = {}  # parent key -> cells not done that wait for it
    for c in grid.cells:
        if c.parent is not None and c.key not in done:
            waiting.setdefault(c.parent, []).append(c)
    # ready queue: defenses of finished attacks first (rows complete early), clean cells (their
    # attacks wait for them), then attacks
    ready: list[Cell] = [c for cells in (grid.defenses, grid.cleans, grid.attacks) for c in cells
                         if c.key not in done and (c.parent is None or c.parent in done)]
    if not ready:
        summary.seconds = time.perf_counter() - t0
        return summary

    if executor == "ray":
        init = dict(ray_init or {})
        if ray_address is None and jobs > 1:  # a local instance sized like --jobs
            init.setdefault("num_cpus", jobs)
        backend: Any = _Ray(fn, root, options, num_gpus=num_gpus, num_cpus=num_cpus,
                            address=ray_address, init_kwargs=init)
    elif jobs > 1:
        backend = _Processes(fn, root, options, jobs, mp_context)
    else:
        backend = _Sequential(fn, root, options)
    bar = progress_bar(total=len(grid), initial=len(done), desc="bench cells", unit="cell", enabled=progress,
                       leave=True)
    cancel = True
    try:
        while ready or backend.running():
            while ready and backend.running() < backend.capacity:
                cell = ready.pop(0)
                bar.set_postfix_str(f"{cell.row} / {cell.column}"[:40])
                backend.submit(cell)
            cell, out, exc = backend.wait_any()
            if exc is not None:
                if isinstance(exc, KeyboardInterrupt):
                    raise exc
                msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                summary.failed[cell.key] = f"{type(exc).__name__}: {msg}"
                log.error("cell %s (%s / %s) failed: %s", cell.key, cell.row, cell.column, msg)
                if fail_fast:
                    raise BenchError(f"cell {cell.key} ({cell.row} / {cell.column}) failed: {msg}") from exc
                summary.skipped += _dependants(waiting, cell.key)
                continue
            key, _, seconds = out
            done.add(key)
            summary.computed.append(key)
            summary.cell_seconds[key] = seconds
            bar.update(1)
            ready[:0] = waiting.pop(key, [])  # its dependants, ahead of further independent cells
        cancel = False
    finally:
        backend.close(cancel)
        bar.close()
    summary.seconds = time.perf_counter() - t0
    return summary


def _dependants(waiting: dict[str, list[Cell]], key: str) -> list[str]:
    """Keys of every not-done cell that waits for ``key``, directly or through another."""
    out: list[str] = []
    stack = [key]
    while stack:
        for c in waiting.pop(stack.pop(), []):
            out.append(c.key)
            stack.append(c.key)
    return out
