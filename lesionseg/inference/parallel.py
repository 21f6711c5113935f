"""Predict many files at once on a multi-core CPU: one image per core, results in input order.

At batch 1 the model's per-layer work is too small to keep several cores busy, and a batch also
needs its files decoded and its outputs encoded, which run on one thread each. Running whole
images side by side, each on one intra-op thread, keeps every core on useful work
(benchmarks/ measures ``lesionseg predict`` both ways).
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

import torch

from .predictor import Predictor

T = TypeVar("T")


def image_workers(predictor: Predictor) -> int:
    """How many images to predict side by side: one per core where the runner suits it (the CPU's
    torch paths), else one (ONNX Runtime and GPUs spread one image over their own threads)."""
    if not predictor.runner.side_by_side:
        return 1
    return max(1, torch.get_num_threads())


def _one_intra_op_thread() -> None:
    torch.set_num_threads(1)


def ordered_map(fn: Callable[..., T], items: Iterable[tuple], workers: int) -> Iterator[tuple[tuple, Future]]:
    """Yield ``(item, future of fn(*item))`` in input order, keeping at most ``workers + 1`` in flight.

    ``items`` is consumed lazily. Exceptions stay inside each future (``future.result()`` re-raises
    them), so one bad item does not stop the others. Closing the generator early cancels what has
    not started and waits for what has.
    """
    threads = torch.get_num_threads()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lesionseg-predict",
                              initializer=_one_intra_op_thread if workers > 1 else None)
    pending: deque[tuple[tuple, Future]] = deque()
    try:
        for item in items:
            pending.append((item, pool.submit(fn, *item)))
            if len(pending) > workers:
                yield pending.popleft()
        while pending:
            yield pending.popleft()
    finally:
        for _, job in pending:
            job.cancel()
        pool.shutdown(wait=True)
        # torch's thread count is process-wide: the workers' setting would outlive them
        torch.set_num_threads(threads)

