"""The bad-input matrix through the app's third door: the running app's API (gradio_client).

Same cases and outcomes as ``test_bad_input_matrix.py``: a readable file is segmented at its
upright size; any other is answered with a one-line message naming the file (never a traceback),
and in a batch the other files are still processed and zipped. Bad weights stop the app at
start-up with exit code 2 and one line.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from app_server import QUIET_ENV, REPO_ROOT, free_port
from bad_inputs import GOOD, IMAGE_CASES, WEIGHTS_CASES, ImageCase, build_images

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

APP_CASES = [c for c in IMAGE_CASES + [GOOD] if c.app]
# the app's image box reads the header itself first; for bytes it cannot identify at all it
# says "not a readable image" rather than the loader's more specific word
HEADER_REFUSED = {"empty": "not a readable image"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_images(tmp_path_factory.mktemp("app_bad") / "in")


@pytest.fixture(scope="module")
def server(tiny_app_server):
    return tiny_app_server  # the suite's shared tiny-model server (conftest.py)


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server.url, verbose=False)


def assert_app_message(message: str, case: ImageCase, needle: str | None = None, named: bool = True) -> None:
    """One line, the problem, the file's name (``named``) and never a server-side path."""
    text = message.strip()
    assert "Traceback" not in text and "\n" not in text, text
    assert not named or case.filename in text, text
    assert (needle or case.needle) in text, text
    assert tempfile.gettempdir() + "/" not in text and str(REPO_ROOT) not in text, text  # no server paths


@pytest.mark.parametrize("case", APP_CASES, ids=lambda c: c.id)
def test_app_segment_door(case: ImageCase, client, inputs: dict[str, Path]) -> None:
    from gradio_client import handle_file

    try:
        overlay, mask, prob, unc, meas, status, files = client.predict(
            handle_file(inputs[case.id]), 0.5, None, api_name="/segment")
    except Exception as e:  # noqa: BLE001 - gradio_client raises AppError for gr.Error
        assert not case.ok, f"{case.id} should work: {e}"
        assert type(e).__name__ == "AppError", repr(e)
        assert_app_message(str(e), case, HEADER_REFUSED.get(case.id))
        return
    if case.ok:
        h, w = case.shape
        assert f"{w}×{h} px" in status and case.filename in status, status
        assert Image.open(mask).size == (w, h)  # small photos: the screen view is the full size
    else:
        assert status.startswith("⚠️") and mask is None and overlay is None, status
        assert_app_message(status.removeprefix("⚠️"), case)


def test_app_batch_door(client, inputs: dict[str, Path]) -> None:
    """The whole matrix as one batch upload: one row per file, the good ones zipped."""
    from gradio_client import handle_file

    files = [handle_file(inputs[c.id]) for c in APP_CASES]
    gallery, table, zip_path, status = client.predict(None, files, "Balanced", api_name="/batch")
    rows = {r[0]: r for r in table["data"]}
    assert sorted(rows) == sorted(c.filename for c in APP_CASES)
    ok = [c for c in APP_CASES if c.ok]
    for case in APP_CASES:
        row = rows[case.filename]
        if case.ok:
            h, w = case.shape
            assert row[-1] == "ok" and row[1] == f"{w}×{h}", row
        else:  # the row's first cell names the file, its status cell says what is wrong
            assert row[-1].startswith("error:"), row
            assert_app_message(row[-1], case, named=False)
    assert len(gallery) == len(ok) and f"{len(ok)} of {len(APP_CASES)}" in status
    with zipfile.ZipFile(zip_path) as zf:
        masks = {n for n in zf.namelist() if n.startswith("masks/")}
        assert masks == {f"masks/{Path(c.filename).stem}_mask.png" for c in ok}
        for case in ok:
            with zf.open(f"masks/{Path(case.filename).stem}_mask.png") as f:
                assert Image.open(f).size == (case.shape[1], case.shape[0])


@pytest.mark.parametrize("case", WEIGHTS_CASES, ids=lambda c: c.id)
def test_app_refuses_bad_weights_at_start(case, tiny_model_dir: Path, tmp_path: Path) -> None:
    source = case.build(tiny_model_dir, tmp_path / "w")
    env = {**os.environ, **QUIET_ENV}
    proc = subprocess.run([sys.executable, "app.py", "--weights", source, "--port", str(free_port())], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert case.needle in lines[0] and source in lines[0]
