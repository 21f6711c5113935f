"""The app in headless chromium (Playwright): upload, threshold, tabs, downloads, batch, errors.

Screenshots of every step go to test-artifacts/browser/. Needs /usr/bin/chromium (or chromium
on PATH): ``scripts/bootstrap.sh --with-chromium`` installs it.
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app_server import REPO_ROOT
from conftest import draw_lesion

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(1500)]

ARTIFACTS = REPO_ROOT / "test-artifacts" / "browser"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 600_000  # generous: CI machines can be slow and busy


@pytest.fixture(scope="module")
def server(app_server):
    return app_server  # the suite's shared server (conftest.py)


@pytest.fixture(scope="module")
def browser(chromium_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    pg = ctx.new_page()
    pg.set_default_timeout(WAIT_MS)
    pg.goto(server.url)
    pg.wait_for_selector("#photo")
    yield pg
    ctx.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def area_text(page) -> str:
    m = re.search(r"Lesion area\s+([^\n]+)", page.locator("#measurements").inner_text())
    return m.group(1).strip() if m else ""


def wait_text_change(page, selector: str, old: str) -> None:
    page.wait_for_function("([sel, old]) => { const e = document.querySelector(sel); "
                           "return e && e.innerText.includes('Lesion area') && !e.innerText.includes(old); }",
                           arg=[selector, old], timeout=WAIT_MS)


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("big") / "dermoscopy_4000x3000.jpg"
    Image.fromarray(draw_lesion(3000, 4000, seed=7)[0]).save(path, quality=90)
    return path


def test_single_photo_upload_threshold_tabs_and_download(page, big_jpeg, tmp_path):
    page.locator("#photo input[type=file]").set_input_files(str(big_jpeg))
    page.wait_for_selector("#overlay img")
    page.wait_for_function("() => document.querySelector('#measurements').innerText.includes('Lesion area')")
    assert "4000×3000" in page.locator("#status").inner_text()
    shot(page, "01_uploaded_overlay")
    before = area_text(page)
    assert before and "px" in before
    stats_before = page.locator("#threshold-stats").inner_text()

    # move the slider near its top end: the area must change without a new upload
    slider = page.locator("#threshold input[type=range]")
    box = slider.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.97, box["y"] + box["height"] / 2)
    wait_text_change(page, "#measurements", before)
    after = area_text(page)
    assert after != before
    assert float(page.locator("#threshold input[type=number]").input_value()) > 0.9
    assert page.locator("#threshold-stats").inner_text() != stats_before
    shot(page, "02_threshold_moved")

    for tab, elem in (("Mask", "#mask img"), ("Probability", "#probability img"), ("Uncertainty", "#uncertainty img")):
        open_tab(page, tab)
        page.wait_for_selector(elem, state="visible")
        shot(page, f"03_tab_{tab.lower()}")
    open_tab(page, "Overlay")

    # full-resolution mask download
    link = page.locator("#downloads a[download$='_mask.png']")
    link.wait_for()
    with page.expect_download() as dl:
        link.click()
    saved = tmp_path / "mask.png"
    dl.value.save_as(saved)
    mask = Image.open(saved)
    assert mask.size == (4000, 3000)
    assert set(np.unique(np.asarray(mask))) <= {0, 255}
    shot(page, "04_downloads_ready")


def test_batch_folder_table_and_zip(page, tmp_path):
    folder = tmp_path / "visit_2024"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(draw_lesion(450, 600, seed=20 + i)[0]).save(folder / f"lesion_{i}.jpg", quality=92)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    open_tab(page, "Batch")
    page.wait_for_selector("#batch-folder")
    shot(page, "05_batch_tab")
    page.locator("#batch-folder input[type=file]").set_input_files(str(folder))
    zip_link = page.locator("#batch-zip a[download$='.zip']")
    zip_link.wait_for()
    table = page.locator("#batch-table").inner_text()
    assert "broken.jpg" in table and "error" in table
    assert table.count("ok") >= 3
    assert page.locator("#batch-gallery img").count() >= 3
    shot(page, "06_batch_done")
    with page.expect_download() as dl:
        zip_link.click()
    saved = tmp_path / "results.zip"
    dl.value.save_as(saved)
    with zipfile.ZipFile(saved) as zf:
        names = set(zf.namelist())
        csv_text = zf.read("results.csv").decode("utf-8")
        mask0 = Image.open(zf.open("masks/lesion_0_mask.png"))
        assert mask0.size == (600, 450)
    assert {f"masks/lesion_{i}_mask.png" for i in range(3)} <= names
    assert {f"overlays/lesion_{i}_overlay.png" for i in range(3)} <= names
    assert "broken.jpg,error" in csv_text


def test_unreadable_photo_shows_a_message(page, tmp_path):
    bad = tmp_path / "not_a_photo.jpg"
    bad.write_bytes(b"this is text, not a JPEG")
    page.locator("#photo input[type=file]").set_input_files(str(bad))
    msg = page.get_by_text(re.compile("not a readable image"))
    msg.first.wait_for()
    assert "Traceback" not in page.content()
    shot(page, "07_error_message")


def test_model_card_tab(page):
    open_tab(page, "Model card")
    card = page.locator("#model-card")
    card.wait_for()
    text = card.inner_text()
    assert text.strip() and "library_name:" not in text and "pipeline_tag:" not in text
    shot(page, "08_model_card")
