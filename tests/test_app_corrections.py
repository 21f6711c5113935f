"""Clinician corrections in the app: refiner clicks, brush / eraser dabs, undo, clear, save, the
``refine`` API, and the whole loop in headless chromium.

The weights are the ``refiner_weights`` fixture's: the shipped model with a click refiner (a
zero-initialised one until a trained refiner ships, which outputs the model's own probabilities).
So these tests check the plumbing (clicks recorded and replayed, dots drawn, undo / clear, the
brush really changing the mask, downloads and saved files following the correction, messages),
never that a click improves an outline. One server serves the API and the browser tests.
"""
from __future__ import annotations

import io
import json
import re
import shutil
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app_server import REPO_ROOT
from conftest import draw_lesion
from lesionseg.clicks import MAX_CLICKS, Click
from lesionseg.inference import Prediction, Predictor
from lesionseg.inference.edits import Stroke, check_strokes
from lesionseg.ui import editing, handlers, launch
from lesionseg.ui.edit_handlers import CorrectionHandlers

# the handlers' gr.Warning toasts are UserWarnings outside a request: expected, not noise to show
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:gradio.helpers")

H, W = 480, 640  # the photo's size; it fits the screen, so the views are at the photo's own pixels


@pytest.fixture(scope="module")
def predictor(refiner_weights) -> Predictor:
    return Predictor.from_weights(str(refiner_weights), device="cpu")


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "lesion.jpg"
    Image.fromarray(draw_lesion(H, W, seed=3)[0]).save(path, quality=92)
    return path


def select(index) -> "object":
    import gradio as gr

    return gr.SelectData(None, {"index": index, "value": None})


def segmented(predictor: Predictor, path: Path, t: float = 0.5):
    return next(handlers.Handlers(predictor).segment(str(path), t, None))[0]


def test_prediction_edits_follow_size_and_threshold():
    yy, xx = np.mgrid[0:40, 0:60]
    prob = np.clip(1.0 - np.hypot(yy - 20, xx - 30) / 25.0, 0, 1).astype(np.float32)
    pred = Prediction(prob, (400, 600), 0.5)  # a 40x60 map of a 400x600 photo
    edited = pred.with_edits([(50, 50, 30, True), (300, 200, 40, False)])
    full = edited.mask
    assert full[50, 50] == 1 and pred.mask[50, 50] == 0  # brush outside the outline
    assert full[200, 300] == 0 and pred.mask[200, 300] == 1  # eraser inside it
    assert np.count_nonzero(full[20:81, 20:81]) == pytest.approx(np.pi * 30 ** 2, rel=0.05)
    small = edited.mask_at((40, 60))  # the same disks, scaled
    assert small[5, 5] == 1 and small[20, 30] == 0
    high = edited.with_threshold(0.9)  # a new cut keeps the edits
    assert high.edits == edited.edits and high.mask[50, 50] == 1 and high.mask[200, 300] == 0
    assert edited.mask_at((400, 600), 0.9).tolist() == high.mask.tolist()
    assert edited.measurements()["area_px"] != pred.measurements()["area_px"]
    assert edited.with_edits([]).mask.tolist() == pred.mask.tolist()
    for bad, match in (([(700, 10, 5, True)], "outside the 600x400 image"), ([(1, 1, 0, True)], "radius 0"),
                       ([(1, float("nan"), 3, True)], "finite"), ([(1, 2, 3)], "expected \\(x, y, radius, add\\)")):
        with pytest.raises(ValueError, match=match):
            check_strokes(bad, (400, 600))


def test_clicks_wait_for_the_flip_tta_views(predictor, photo):
    from dataclasses import replace

    ch = CorrectionHandlers(predictor)
    pending = replace(segmented(predictor, photo), tta_pending=True)
    calls = predictor.calls
    out = ch.select(pending, editing.ADD, 15, 0.5, None, select([320, 240]))
    assert "still being added" in out[5] and predictor.calls == calls  # no model call, the state kept


def test_clicks_dots_undo_clear_and_downloads(predictor, photo):
    ch = CorrectionHandlers(predictor)
    result = segmented(predictor, photo)
    assert result.model_input is not None and not result.actions
    calls = predictor.calls
    state, ov, mask, meas, files, line = ch.select(result, editing.ADD, 15, 0.5, None, select([320, 240]))
    assert predictor.calls == calls + 1 and files is None and "1 click (1 +, 0 −)" in line
    assert state.clicks == [Click(320.0, 240.0, True)] and state.uncorrected is result.prediction
    assert state.prediction.threshold == 0.5  # refined at the slider's threshold, where it is shown
    r, g, b = ov[240, 320].astype(int)
    assert g > 180 and r < 100  # a green dot where the click was
    state2, ov2, *_, line2 = ch.select(state, editing.REMOVE, 15, 0.5, None, select([100, 420]))
    assert predictor.calls == calls + 2 and "2 clicks (1 +, 1 −)" in line2
    r, g, b = ov2[420, 100].astype(int)
    assert r > 180 and g < 100  # red for "not lesion"
    # a brush dab on the skin far from the lesion: the mask, measurements and downloads follow it
    state3, ov3, mask3, meas3, *_ = ch.select(state2, editing.BRUSH, 20, 0.5, None, select([40, 40]))
    assert predictor.calls == calls + 2  # painting runs no model
    assert mask3[40, 40] == 255 and not state2.prediction.mask[40, 40] and meas3 != meas
    paths = handlers.downloads(state3, 0.5, None)
    full = np.asarray(Image.open(paths[0])) > 127
    assert full.shape == (H, W) and np.array_equal(full, state3.prediction.with_threshold(0.5).mask.astype(bool))
    doc = json.loads(Path(paths[2]).read_text(encoding="utf-8"))
    assert doc["corrections"] == {"clicks": 2, "brush_dabs": 1} and doc["area_px"] == int(full.sum())
    # the slider re-cuts the corrected probabilities and paints the dab again
    ov_t, mask_t, *_ = handlers.rethreshold(state3, 0.95, None)
    assert mask_t[40, 40] == 255 and ov_t[420, 100, 0] > 180  # dab kept, dot still drawn
    # undo: the dab without a model call, then a click by replaying the one before it
    undone = ch.undo(state3, 0.5, None)[0]
    assert predictor.calls == calls + 2 and undone.actions == state2.actions
    assert np.array_equal(undone.prediction.mask, state2.prediction.mask)
    undone = ch.undo(undone, 0.5, None)[0]
    assert predictor.calls == calls + 3 and undone.actions == state.actions
    assert np.array_equal(undone.prediction.lowres, state.prediction.lowres)  # deterministic replay
    cleared = ch.clear(state3, 0.5, None)[0]
    assert cleared.prediction is result.prediction and cleared.actions == () and cleared.uncorrected is None
    assert "No corrections yet" in ch.describe(cleared)


def test_messages_keep_the_result(predictor, photo, tmp_path):
    ch = CorrectionHandlers(predictor)
    import gradio as gr

    out = ch.select(None, editing.ADD, 15, 0.5, None, select([1, 1]))
    assert all(o == gr.skip() for o in out[:5]) and "Drop a photo first" in out[5]  # all kept, one message
    result = segmented(predictor, photo)
    assert "outside the 640x480 image" in ch.select(result, editing.ADD, 15, 0.5, None, select([700, 10]))[5]
    assert "not on the photo" in ch.select(result, editing.ADD, 15, 0.5, None, select(None))[5]
    full = replace(result, actions=tuple(Click(10.0 + i, 10.0, True) for i in range(MAX_CLICKS)),
                           uncorrected=result.prediction)
    calls = predictor.calls
    line = ch.select(full, editing.ADD, 15, 0.5, None, select([5, 5]))[5]
    assert f"more than the {MAX_CLICKS} allowed" in line and predictor.calls == calls
    assert "Nothing to undo" in ch.undo(result, 0.5, None)[5]
    assert "--corrections-dir" in ch.save(result, 0.5)
    # weights without a refiner: clicks say so, the brush still works
    plain_dir = tmp_path / "no_refiner"
    plain_dir.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy2(REPO_ROOT / "weights" / name, plain_dir / name)
    plain = Predictor.from_weights(str(plain_dir), device="cpu", fast=False)
    no_refiner = CorrectionHandlers(plain)
    assert not plain.can_refine and no_refiner.default_mode == editing.BRUSH
    line = no_refiner.select(result, editing.ADD, 15, 0.5, None, select([320, 240]))[5]
    assert "Click correction is unavailable" in line and "Brush" in line
    painted = no_refiner.select(result, editing.BRUSH, 15, 0.5, None, select([30, 30]))
    assert painted[0].strokes and painted[2][30, 30] == 255
    with pytest.raises(Exception, match="no click refiner"):
        no_refiner.refine_api(str(photo), "[[10, 10, true]]", None)


def test_save_writes_full_resolution_pairs_and_never_overwrites(predictor, tmp_path):
    big = tmp_path / "big_photo.jpg"  # larger than the screen: the photo is read again to be saved
    Image.fromarray(draw_lesion(900, 1300, seed=5)[0]).save(big, quality=95)
    ch = CorrectionHandlers(predictor, tmp_path / "corrections")
    result = segmented(predictor, big, 0.4)
    assert result.display_size != result.full_size
    assert "correct the outline first" in ch.save(result, 0.4)
    state = ch.select(result, editing.BRUSH, 10, 0.4, None, select([30, 30]))[0]
    state = ch.select(state, editing.ADD, 10, 0.4, None, select([500, 350]))[0]
    first = ch.save(state, 0.4)
    second = ch.save(state, 0.4)
    ids = [re.search(r"Saved as \*\*(.+?)\*\*", s).group(1) for s in (first, second)]
    assert ids[0] != ids[1]
    folder = tmp_path / "corrections"
    sidecars = sorted((folder / "corrections").glob("*.json"))
    assert len(sidecars) == 2 and len(list((folder / "images").iterdir())) == 2
    doc = json.loads((folder / "corrections" / f"{ids[0]}.json").read_text(encoding="utf-8"))
    meta = doc["meta"]
    assert meta["threshold"] == 0.4 and len(meta["clicks"]) == 1 and len(meta["brush_strokes"]) == 1
    assert meta["actions"] == ["brush", "click"] and meta["source_file"] == "big_photo.jpg"
    assert meta["model"] == predictor.source
    saved_mask = np.asarray(Image.open(folder / doc["mask"])) > 127
    assert saved_mask.shape == (900, 1300)
    assert np.array_equal(saved_mask, state.prediction.with_threshold(0.4).mask.astype(bool))
    saved_rgb = np.asarray(Image.open(folder / doc["image"]))
    original = np.asarray(Image.open(big))
    assert saved_rgb.shape == (900, 1300, 3) and np.abs(saved_rgb.astype(int) - original).mean() < 3


def test_corrections_dir_flag(tmp_path, capsys):
    cfg = launch.parse_args(["--corrections-dir", str(tmp_path / "new" / "dir")])
    assert cfg.corrections_dir == str((tmp_path / "new" / "dir").resolve()) and Path(cfg.corrections_dir).is_dir()
    assert launch.parse_args([]).corrections_dir is None
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as e:
        launch.parse_args(["--corrections-dir", str(blocker / "sub")])
    assert e.value.code == 2 and "--corrections-dir" in capsys.readouterr().err


# --- the running app -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(app_server):
    return app_server  # the suite's shared server (conftest.py)


@pytest.mark.slow
def test_refine_api(server, photo, predictor):
    from gradio_client import Client, handle_file

    client = Client(server.url, verbose=False)
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert [p["parameter_name"] for p in api["/refine"]["parameters"]] == ["image", "clicks", "threshold"]
    clicks = [[320, 240, True], [100, 420, False]]
    overlay, mask_path, meas = client.predict(handle_file(photo), json.dumps(clicks), 0.5, api_name="/refine")
    mask = np.asarray(Image.open(mask_path)) > 127
    assert mask.shape == (H, W) and meas["corrections"] == {"clicks": 2, "brush_dabs": 0}
    assert meas["area_px"] == int(mask.sum()) and meas["threshold"] == 0.5
    ov = np.asarray(Image.open(overlay).convert("RGB")).astype(int)
    assert ov[240, 320, 1] > 180 and ov[420, 100, 0] > 180  # both dots
    # the same clicks in this process give the same outline (to the fast path's rounding)
    local = editing.rebuild(predictor, segmented(predictor, photo), tuple(Click(*c) for c in clicks), 0.5)
    assert np.mean(local.prediction.with_threshold(0.5).mask.astype(bool) != mask) < 0.002
    for text, message in (("[[1, 2", "not valid JSON"), ('{"x": 1}', "expected a JSON list"),
                          ("[[700, 10, true]]", "outside the 640x480 image"),
                          (json.dumps([[5, 5, True]] * (MAX_CLICKS + 1)), f"more than the {MAX_CLICKS} allowed"),
                          ("[[5, 5, 7]]", "positive must be True")):
        with pytest.raises(Exception, match=re.escape(message)) as e:
            client.predict(handle_file(photo), text, 0.5, api_name="/refine")
        assert "Traceback" not in str(e.value)
    with pytest.raises(Exception, match="Threshold must lie in"):
        client.predict(handle_file(photo), "[]", 5.0, api_name="/refine")


@pytest.mark.slow
def test_refine_api_reads_no_server_file(server):
    from test_app_security import PASSWD, call, file_payloads, marker

    for target in (PASSWD, REPO_ROOT / "weights" / "model.safetensors"):
        leak = marker(target).decode(errors="replace")
        for payload in file_payloads(target, server.port):
            event, text = call(server.port, "refine", [payload, "[[1, 1, true]]", None])
            assert leak not in text and "Traceback" not in text, payload
            assert event in ("error", "http 422", "http 400", "http 403"), (payload, text[-300:])


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "browser"


def _overlay_pixel(page, server, x: int, y: int) -> np.ndarray:
    """The shown overlay's RGB at (x, y) of its own pixels, fetched as the browser got it."""
    src = page.locator("#overlay img").get_attribute("src")
    with urllib.request.urlopen(urllib.request.Request(src if src.startswith("http") else server.url + src),
                                timeout=60) as r:
        return np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB"))[y, x].astype(int)


def _click(page, fx: float, fy: float) -> None:
    """Click the shown overlay at fractions (fx, fy) of its box, once its image has loaded: until
    then the <img> is laid out 0 px wide, and a position taken from that box lands on its left edge
    (as a clinician never clicks on a photo not yet drawn, this waits, as a person would)."""
    page.wait_for_function("() => { const i = document.querySelector('#overlay img');"
                           " return !!i && i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width > 0; }")
    img = page.locator("#overlay img")
    box = img.bounding_box()
    img.click(position={"x": box["width"] * fx, "y": box["height"] * fy})


def _wait(page, selector: str, text: str) -> None:
    page.wait_for_function("([s, t]) => (document.querySelector(s)?.innerText || '').includes(t)",
                           arg=[selector, text])


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.timeout(600)
def test_browser_click_undo_brush_download_and_save(server, photo, predictor, chromium_path, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1400, "height": 1100}, accept_downloads=True).new_page()
        page.set_default_timeout(120_000)
        page.goto(server.url)
        page.locator("#photo input[type=file]").set_input_files(str(photo))
        _wait(page, "#corrections", "No corrections yet")
        _wait(page, "#measurements", "Lesion area")
        area = page.locator("#measurements").inner_text()
        shown = page.locator("#overlay img").get_attribute("src")
        _click(page, 0.5, 0.5)  # "Add lesion (+)" is the default mode with a refiner
        _wait(page, "#corrections", "1 click (1 +")
        # the corrections text and the overlay are separate outputs of one event: read the overlay
        # once the browser has the new one, not the one still shown
        page.wait_for_function("([s, old]) => document.querySelector(s)?.getAttribute('src') !== old",
                               arg=["#overlay img", shown])
        r, g, b = _overlay_pixel(page, server, W // 2, H // 2)
        assert g > 150 and r < 120, "no green dot where the click was"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "09_correction_click.png"), full_page=True)
        page.locator("#undo").click()
        _wait(page, "#corrections", "No corrections yet")
        page.get_by_label("Brush", exact=True).check()
        _click(page, 0.08, 0.1)  # on the skin, far from the lesion
        _wait(page, "#corrections", "1 brush dab")
        assert page.locator("#measurements").inner_text() != area
        link = page.locator("#downloads a[download$='_mask.png']")
        link.wait_for()
        with page.expect_download() as dl:
            link.click()
        dl.value.save_as(tmp_path / "mask.png")
        downloaded = np.asarray(Image.open(tmp_path / "mask.png")) > 127
        page.screenshot(path=str(ARTIFACTS / "10_correction_brush.png"), full_page=True)
        page.locator("#save-correction").click()
        _wait(page, "#corrections", "Saved as")
        page.locator("#save-correction").click()
        page.wait_for_function("() => (document.querySelector('#corrections')?.innerText || '')"
                               ".match(/Saved as \\S+_2/)")
        browser.close()
    sidecars = sorted((server.corrections / "corrections").glob("*.json"), key=lambda p: len(p.name))
    assert len(sidecars) == 2  # the second save took a new id
    doc = json.loads(sidecars[0].read_text(encoding="utf-8"))
    saved = np.asarray(Image.open(server.corrections / doc["mask"])) > 127
    assert np.array_equal(saved, downloaded) and saved.shape == (H, W)
    (x, y, radius, add), = doc["meta"]["brush_strokes"]
    assert add and doc["meta"]["clicks"] == [] and abs(x - 0.08 * W) < 3 and abs(y - 0.1 * H) < 3
    # the download is the model's outline with that dab painted, as this process computes it
    base = segmented(predictor, photo).prediction
    expected = base.with_threshold(doc["meta"]["threshold"]).with_edits([Stroke(x, y, radius, True)]).mask
    assert np.mean(expected.astype(bool) != downloaded) < 0.002
    assert downloaded[int(y), int(x)] and not base.with_threshold(doc["meta"]["threshold"]).mask[int(y), int(x)]
