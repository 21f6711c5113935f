"""The app's logic without a server: ZIP safety, views, presets, launch options, re-thresholding, batch."""
from __future__ import annotations

import csv
import io
import json
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import draw_lesion
from lesionseg import operating_points
from lesionseg.data.archive import UnsafeArchiveError, ZipLimits, safe_zip_members
from lesionseg.data.inputs import upload_inputs
from lesionseg.inference import Prediction, Predictor
from lesionseg.inference.weights import weights_source
from lesionseg.ui import launch, session
from lesionseg.ui.batch import TABLE_HEADERS, run_batch
from lesionseg.ui.card import model_card_markdown, strip_front_matter
from lesionseg.ui.views import DISPLAY_MAX_SIDE, render_views
from lesionseg.utils.sizes import fit_size


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    """The shipped weights (weights/), on CPU."""
    return Predictor.from_weights(device="cpu")


def jpeg_bytes(h: int, w: int, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(draw_lesion(h, w, seed)[0]).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_zip(path: Path, entries: list[tuple[str, bytes]], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


# --- ZIP safety ---------------------------------------------------------------------------------

def test_safe_zip_members_reads_good_archive_and_skips_macos_forks(tmp_path):
    z = write_zip(tmp_path / "ok.zip", [("a/b.jpg", b"x" * 10), ("c.png", b"y"), ("__MACOSX/a/._b.jpg", b"z"),
                                        ("a/._hidden.jpg", b"z")])
    assert safe_zip_members(z) == [("a/b.jpg", b"x" * 10), ("c.png", b"y")]


@pytest.mark.parametrize("name", ["../evil.jpg", "a/../../evil.jpg", "/etc/evil.jpg", "C:/evil.jpg",
                                  "..\\evil.jpg"])
def test_safe_zip_members_refuses_traversal_and_absolute_paths(tmp_path, name):
    z = write_zip(tmp_path / "bad.zip", [("fine.jpg", b"x"), (name, b"y")])
    with pytest.raises(UnsafeArchiveError, match="bad.zip: refused"):
        safe_zip_members(z)


def test_safe_zip_members_refuses_symlinks(tmp_path):
    z = write_zip(tmp_path / "link.zip", [("fine.jpg", b"x")], symlink="passwd.jpg")
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        safe_zip_members(z)


def test_safe_zip_members_refuses_bombs_and_too_many_files(tmp_path):
    bomb = write_zip(tmp_path / "bomb.zip", [("zeros.jpg", b"\0" * (20 * 1024 ** 2))])  # ~1000x ratio
    with pytest.raises(UnsafeArchiveError, match="zip bomb"):
        safe_zip_members(bomb)
    with pytest.raises(UnsafeArchiveError, match="expands to more than"):
        safe_zip_members(write_zip(tmp_path / "big.zip", [(f"{i}.jpg", b"a" * 600) for i in range(4)]),
                         ZipLimits(max_total_bytes=2000))
    with pytest.raises(UnsafeArchiveError, match="more than 3 files"):
        safe_zip_members(write_zip(tmp_path / "many.zip", [(f"{i}.jpg", b"a") for i in range(4)]),
                         ZipLimits(max_files=3))
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"not a zip")
    with pytest.raises(UnsafeArchiveError, match="not a readable ZIP"):
        safe_zip_members(fake)


def test_upload_inputs_writes_members_under_work_dir_only(tmp_path):
    z = write_zip(tmp_path / "in.zip", [("deep/dir/x.jpg", b"1"), ("notes.txt", b"2")])
    items = upload_inputs([z, tmp_path / "y.png", tmp_path / "z.doc"], tmp_path / "work")
    assert [i.name for i in items] == ["in.zip/deep/dir/x.jpg", "in.zip/notes.txt", "y.png", "z.doc"]
    assert items[0].path.parent.parent == tmp_path / "work" and items[0].path.read_bytes() == b"1"
    assert items[1].skipped and items[3].skipped and items[2].problem is None
    evil = upload_inputs([write_zip(tmp_path / "evil.zip", [("../x.jpg", b"1")])], tmp_path / "work2")
    assert len(evil) == 1 and "refused" in evil[0].problem
    assert not (tmp_path / "x.jpg").exists()


# --- views, presets, model card -----------------------------------------------------------------

def test_render_views_are_screen_sized():
    assert fit_size(3000, 4000, DISPLAY_MAX_SIDE) == (768, 1024)
    assert fit_size(300, 400, DISPLAY_MAX_SIDE) == (300, 400)  # never enlarged
    rgb = np.zeros((3000, 4000, 3), np.uint8)
    prob = np.zeros((3000, 4000), np.float32)
    prob[1000:2000, 1000:3000] = 0.9
    pred = Prediction.from_arrays(prob, (prob >= 0.5).astype(np.uint8), 0.5, np.full_like(prob, 0.2))
    views = render_views(rgb, pred)
    assert set(views) == {"overlay", "mask", "probability", "uncertainty"}
    for name in ("overlay", "probability", "uncertainty"):
        assert views[name].shape == (768, 1024, 3) and views[name].dtype == np.uint8
    assert views["mask"].shape == (768, 1024) and set(np.unique(views["mask"])) == {0, 255}
    assert max(views["mask"].shape) <= DISPLAY_MAX_SIDE
    assert render_views(rgb, pred, threshold=0.95)["mask"].max() == 0  # threshold argument re-cuts
    no_tta = Prediction.from_arrays(prob, pred.mask, 0.5, None)
    assert render_views(rgb[:300, :400], Prediction.from_arrays(prob[:300, :400], pred.mask[:300, :400], 0.5))["overlay"].shape \
        == (300, 400, 3)
    assert render_views(rgb, no_tta)["uncertainty"].shape == (768, 1024, 3)


def test_presets_and_validation_stats():
    points = [{"threshold": t, "recall": r, "precision": p, "dice": d}
              for t, r, p, d in [(0.3, 0.98, 0.40, 0.55), (0.4, 0.90, 0.64, 0.72), (0.5, 0.85, 0.80, 0.80),
                                 (0.6, 0.81, 0.87, 0.81), (0.7, 0.75, 0.93, 0.79), (0.75, 0.67, 0.96, 0.75),
                                 (0.9, 0.0, 1.0, 0.0)]]
    table = operating_points.presets(points, 0.35)
    assert table == {operating_points.SCREENING: 0.35, operating_points.BALANCED: 0.6,
                     operating_points.HIGH_PRECISION: 0.75}
    mid = operating_points.validation_stats(points, 0.45)
    assert mid["recall"] == pytest.approx(0.875) and mid["precision"] == pytest.approx(0.72)
    assert operating_points.validation_stats(points, 0.1)["recall"] == 0.98
    assert "recall 88 %" in operating_points.describe(points, 0.45)
    # no point reaches 0.95 precision with recall >= 0.5: most precise point with recall >= 0.8
    table2 = operating_points.presets(points[:4], 0.35)
    assert table2[operating_points.HIGH_PRECISION] == 0.6
    assert operating_points.presets([], 0.4) == {operating_points.SCREENING: 0.4, operating_points.BALANCED: 0.5,
                                                 operating_points.HIGH_PRECISION: 0.7}
    assert operating_points.validation_stats([], 0.5) is None


def test_model_card_strips_front_matter(tmp_path):
    assert strip_front_matter("---\nlicense: x\ntags:\n- a\n---\n# Card\ntext") == "# Card\ntext"
    assert strip_front_matter("# No front matter\n---\n") == "# No front matter\n---\n"
    (tmp_path / "README.md").write_text("---\nlibrary_name: lesionseg\n---\n\n# My model\n", encoding="utf-8")
    assert model_card_markdown(str(tmp_path)) == "# My model"
    assert "No model card" in model_card_markdown(str(tmp_path / "missing"))
    shipped = model_card_markdown(None)
    assert "library_name:" not in shipped and shipped.strip()


# --- launch options -----------------------------------------------------------------------------

def test_parse_args_defaults_and_auth_sources(tmp_path, monkeypatch):
    monkeypatch.delenv(launch.AUTH_ENV, raising=False)
    monkeypatch.delenv(launch.WEIGHTS_ENV, raising=False)
    cfg = launch.parse_args([])
    assert (cfg.host, cfg.port, cfg.share, cfg.auth, cfg.weights, cfg.tta) == ("127.0.0.1", 7860, False, None, None,
                                                                               False)  # plain prediction, as the CLI
    assert launch.parse_args(["--tta"]).tta is True
    assert launch.parse_args(["--auth", "ann:se:cret"]).auth == [("ann", "se:cret")]
    f = tmp_path / "users.txt"
    f.write_text("# users\nann:one\nbob:two\n", encoding="utf-8")
    assert launch.parse_args(["--auth-file", str(f)]).auth == [("ann", "one"), ("bob", "two")]
    monkeypatch.setenv(launch.AUTH_ENV, "eve:three,dan:four")
    monkeypatch.setenv(launch.WEIGHTS_ENV, "owner/repo")
    cfg = launch.parse_args(["--max-upload-mb", "5", "--no-tta"])
    assert cfg.auth == [("eve", "three"), ("dan", "four")] and weights_source(cfg.weights) == "owner/repo"
    assert cfg.max_upload_mb == 5 and cfg.tta is False


@pytest.mark.parametrize("argv", [["--auth", "nopassword"], ["--auth", ":pw"], ["--auth-file", "/nonexistent/x"],
                                  ["--examples", "/nonexistent/dir"], ["--port", "0"]])
def test_parse_args_rejects_bad_values_with_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        launch.parse_args(argv)
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_parse_args_examples_lists_images(tmp_path):
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(20, 20))
    (tmp_path / "notes.txt").write_text("x")
    assert [Path(p).name for p in launch.parse_args(["--examples", str(tmp_path)]).examples] == ["a.jpg"]


def test_bad_weights_exit_2_with_one_line(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(SystemExit) as e:
        launch.load_predictor_or_exit(launch.LaunchConfig(weights=str(tmp_path), device="cpu"))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("lesionseg app: error:") and err.count("\n") == 1 and "Traceback" not in err


# --- single image: segment once, re-threshold without the model ---------------------------------

def test_rethreshold_never_calls_the_model(predictor, tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_bytes(600, 800, seed=3))
    result = session.segment_file(predictor, path, tta=True)
    calls = predictor.calls
    assert result.full_size == (600, 800) and result.prediction.uncertainty is not None
    views, meas = session.first_outputs(result, 0.5)
    assert views["overlay"].shape == (600, 800, 3)
    lowres = result.prediction.lowres
    lo_t, hi_t = float(lowres.min()) + 1e-3, float(lowres.max())  # outline almost all vs almost none
    lo_views, lo_meas = session.rethreshold(result, lo_t)
    hi_views, hi_meas = session.rethreshold(result, hi_t)
    assert predictor.calls == calls, "re-thresholding ran the model"
    assert lo_meas["area_px"] > hi_meas["area_px"]
    assert not np.array_equal(lo_views["mask"], hi_views["mask"])
    files = session.write_downloads(result, 0.5, meas, tmp_path / "out")
    assert predictor.calls == calls
    mask_png = Image.open(files[0])
    assert mask_png.size == (800, 600) and set(np.unique(np.asarray(mask_png))) <= {0, 255}
    assert Image.open(files[1]).size == (800, 600)
    doc = json.loads(files[2].read_text(encoding="utf-8"))
    assert doc["area_px"] == meas["area_px"] and "not a diagnosis" in doc["note"]


def test_same_probabilities_as_predict_file(predictor, tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_bytes(300, 400, seed=5))
    result = session.segment_file(predictor, path, tta=False)
    _, direct = predictor.predict_file(path, threshold=0.5, tta=False)
    kept = result.prediction.with_threshold(0.5)
    np.testing.assert_allclose(kept.prob, direct.prob, atol=1e-5)


def test_unreadable_photo_is_a_one_line_error(predictor, tmp_path):
    from lesionseg.data.io import ImageLoadError

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(ImageLoadError) as e:
        session.segment_file(predictor, bad)
    assert "broken.jpg" in str(e.value) and "\n" not in str(e.value)


def test_handlers_turn_errors_into_messages(predictor, tmp_path):
    from lesionseg.ui import handlers

    h = handlers.Handlers(predictor)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"garbage")
    out, = h.segment(str(bad), 0.5, None)  # a generator: one update for an error
    assert out[0] is None and "broken.jpg" in out[6] and out[6].startswith("⚠️")
    assert str(tmp_path) not in out[6]  # no server paths in messages
    assert next(h.segment(None, 0.5, None))[0] is None
    assert all(isinstance(v, dict) for v in handlers.rethreshold(None, 0.5, None))  # gr.skip() updates
    assert handlers.downloads(None, 0.5, None) is None
    assert h.batch(None, None, None, progress=lambda *a, **k: None)[3].startswith("⚠️")


def test_presets_drive_the_slider_and_the_slider_names_its_preset(predictor):
    from lesionseg.ui import handlers

    h = handlers.Handlers(predictor)
    assert h.apply_preset(operating_points.SCREENING) == predictor.threshold
    balanced = h.presets[operating_points.BALANCED]
    text, preset = h.describe(balanced)
    assert preset == operating_points.BALANCED and f"{balanced:.2f}" in text
    assert h.describe(0.123)[1] is None


# --- batch ----------------------------------------------------------------------------------------

def test_run_batch_reports_bad_files_and_zips_the_good_ones(predictor, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i, (h, w) in enumerate([(300, 400), (450, 600)]):
        (src / f"good{i}.jpg").write_bytes(jpeg_bytes(h, w, seed=i))
    (src / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    z = write_zip(tmp_path / "more.zip", [("sub/zipped.jpg", jpeg_bytes(200, 200, seed=9))])
    seen = []
    gallery, rows, zip_path = run_batch(predictor, sorted(src.iterdir()) + [z], tmp_path / "out",
                                        progress=lambda f, text: seen.append(f))
    by_name = {r[0]: r for r in rows}
    assert len(rows) == 4 and all(len(r) == len(TABLE_HEADERS) for r in rows)
    assert by_name["corrupt.jpg"][-1].startswith("error: ") and "corrupt" in by_name["corrupt.jpg"][-1]
    assert str(tmp_path) not in by_name["corrupt.jpg"][-1]
    assert by_name["good0.jpg"][-1] == by_name["good1.jpg"][-1] == by_name["more.zip/sub/zipped.jpg"][-1] == "ok"
    assert by_name["good1.jpg"][1] == "600×450"
    assert len(gallery) == 3 and all(Path(p).is_file() for p, _ in gallery)
    assert seen and seen[-1] == pytest.approx(1.0)
    with zipfile.ZipFile(zip_path) as zf:
        names = set(zf.namelist())
        assert {"results.csv", "masks/good0_mask.png", "masks/good1_mask.png", "masks/zipped_mask.png",
                "overlays/good0_overlay.png"} <= names
        assert not any("corrupt" in n for n in names if n != "results.csv")
        assert Image.open(io.BytesIO(zf.read("masks/good1_mask.png"))).size == (600, 450)
        table = list(csv.DictReader(io.StringIO(zf.read("results.csv").decode("utf-8"))))
    status = {r["file"]: r["status"] for r in table}
    assert status == {"corrupt.jpg": "error", "good0.jpg": "ok", "good1.jpg": "ok", "more.zip/sub/zipped.jpg": "ok"}
