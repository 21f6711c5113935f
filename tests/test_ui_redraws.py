"""Downloads that a newer redraw overtook are dropped, never shown (lesionseg/ui/redraws.py)."""
from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

from conftest import draw_lesion
from lesionseg.inference import Predictor
from lesionseg.ui import handlers, session
from lesionseg.ui.redraws import Redraws


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> session.ImageResult:
    path = tmp_path_factory.mktemp("redraws") / "photo.jpg"
    buf = io.BytesIO()
    Image.fromarray(draw_lesion(300, 400, 7)[0]).save(buf, format="JPEG", quality=90)
    path.write_bytes(buf.getvalue())
    return session.segment_file(Predictor.from_weights(device="cpu"), path, tta=False)


def test_counts_per_session_and_forgets_the_least_recent():
    r = Redraws(keep=2)
    a, b, c = (gr.Request(session_hash=s) for s in "abc")
    assert r.count(None) is None and r.count(a) == 0
    r.bump(None)  # a direct call without a session counts nothing
    r.bump(a), r.bump(a), r.bump(b)
    assert (r.count(a), r.count(b)) == (2, 1)
    r.bump(c)  # three sessions, two kept: a, the least recently redrawn, is forgotten
    assert (r.count(a), r.count(b), r.count(c)) == (0, 1, 1)


def _downloads_with(result: session.ImageResult, request: gr.Request, during: gr.Request | None) -> object:
    """handlers.downloads for ``request``'s session; ``during``: a session that redraws (the slider)
    while the write waits."""
    out: dict[str, object] = {}
    worker = threading.Thread(target=lambda: out.update(v=handlers.downloads(result, 0.5, None, request)))
    worker.start()
    if during is not None:
        time.sleep(handlers.DOWNLOADS_SETTLE_S / 4)  # the write has noted the count and waits
        handlers.rethreshold(result, 0.6, None, during)
    worker.join(timeout=60)
    return out["v"]


def test_a_redraw_during_the_write_drops_its_files(result, monkeypatch):
    monkeypatch.setattr(handlers, "DOWNLOADS_SETTLE_S", 1.0)  # room for the redraw on a busy machine
    me, other = gr.Request(session_hash="me"), gr.Request(session_hash="other")
    files = _downloads_with(result, me, during=None)
    assert isinstance(files, list) and [Path(f).name for f in files] == \
        ["photo_mask.png", "photo_overlay.png", "photo_measurements.json"]
    assert isinstance(_downloads_with(result, me, during=other), list)  # another browser's slider: kept
    dropped = _downloads_with(result, me, during=me)
    assert isinstance(dropped, dict) and dropped.get("__type__") == "update", dropped  # gr.skip()
