"""inference/parallel.py: images predicted side by side, results in input order."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from lesionseg.inference.parallel import image_workers, ordered_map


def test_results_come_back_in_input_order_and_errors_stay_in_their_item():
    def work(i: int, delay: float) -> int:
        time.sleep(delay)
        if i == 3:
            raise ValueError("bad item 3")
        return i * 10

    items = [(i, 0.03 if i % 2 == 0 else 0.0) for i in range(8)]  # even items finish last
    seen = []
    for item, job in ordered_map(work, items, workers=3):
        if item[0] == 3:
            with pytest.raises(ValueError, match="bad item 3"):
                job.result()
        else:
            seen.append(job.result())
    assert seen == [i * 10 for i in range(8) if i != 3]


def test_lookahead_is_bounded_and_closing_stops_the_rest():
    started: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            started.append(i)
        time.sleep(0.01)
        return i

    gen = ordered_map(work, ((i,) for i in range(100)), workers=2)
    for n, (item, job) in enumerate(gen):
        assert job.result() == item[0]
        assert len(started) <= n + 1 + 2 + 1  # at most workers + 1 ahead of the consumer
        if n == 4:
            break
    gen.close()
    time.sleep(0.05)
    assert len(started) <= 5 + 3


def test_workers_run_the_model_on_one_thread_and_leave_the_callers_setting():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen = [job.result() for _, job in ordered_map(lambda: torch.get_num_threads(), [()] * 4, workers=2)]
        assert seen == [1, 1, 1, 1]
        assert torch.get_num_threads() == 2
        later: list[int] = []
        t = threading.Thread(target=lambda: later.append(torch.get_num_threads()))
        t.start()
        t.join()
        assert later == [2]
    finally:
        torch.set_num_threads(before)


def test_one_image_at_a_time_off_the_cpu_torch_path(tiny_model):
    from lesionseg.inference import Predictor

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert image_workers(Predictor(tiny_model, device="cpu", fast=False)) == 2
        assert image_workers(Predictor(tiny_model, device="cpu", fast=False, backend="onnx")) == 1
    finally:
        torch.set_num_threads(before)
