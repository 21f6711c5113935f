"""``lesionseg data prepare``: official layouts in, images/ + masks/ + manifest out; real files throughout.

Archives and folders are built at test time in each official layout (tests/official_layouts.py);
nothing comes from real data.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from lesionseg.cli.main import main
from lesionseg.data.pairing import collect_pairs
from lesionseg.data.prepare import PrepareError, Settings, prepare
from lesionseg.data.prepare.convert import plan
from official_layouts import LAYOUTS, encode, isic2018_members, photo, write_zip


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """{relative path: (mtime_ns, content)} of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_official_layout_prepares_into_the_project_layout(layout: str, tmp_path: Path) -> None:
    sources, ids = LAYOUTS[layout](tmp_path / "download")
    report = prepare(sources, tmp_path / "out", Settings(64, "squash"), jobs=2)
    assert report.problems == [] and sorted(report.written) == sorted(ids)
    out = tmp_path / "out"
    assert (out / "ids.txt").read_text().split() == sorted(ids)
    assert not (out / "problems.txt").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["size"] == 64 and manifest["settings"]["resize"] == "squash"
    assert sorted(manifest["items"]) == sorted(ids) and manifest["count"] == len(ids)
    for ident in ids:
        item = manifest["items"][ident]
        assert item["layout"] == layout
        img, mask = read(out / f"images/{ident}.jpg"), read(out / f"masks/{ident}_segmentation.png")
        assert img.shape == (64, 64, 3) and mask.shape == (64, 64)
        assert set(np.unique(mask)) <= {0, 255} and 0 < (mask == 255).mean() < 1
        # the lesion (dark) is where the mask says
        gray = img.mean(axis=2)
        assert gray[mask == 255].mean() < gray[mask == 0].mean() - 50
        # manifest: where it came from and what was written
        src = item["image"]
        assert src["bytes"] > 0 and len(src["sha256"]) == 64 and ident in src["file"]
        assert (item["width"], item["height"]) in [(w, h) for h, w in
                                                    [photo(i)[0].shape[:2] for i in range(40)]]
        for kind in ("image", "mask"):
            data = (out / item["output"][kind]).read_bytes()
            assert __import__("hashlib").sha256(data).hexdigest() == item["output"][f"{kind}_sha256"]
    # the folder is what train / evaluate read
    assert sorted(p.id for p in collect_pairs(out / "images", out / "masks")) == sorted(ids)
    # ignored companions are counted, not listed: superpixels, LICENSE, metadata, PH2 ROI folders
    if layout in ("isic2017", "isic2018", "ph2"):
        assert report.ignored > 0


def test_an_extracted_folder_gives_the_same_files_as_its_zips(tmp_path: Path) -> None:
    sources, ids = LAYOUTS["isic2018"](tmp_path / "zips")
    folder = tmp_path / "extracted"
    for z in sources:
        with zipfile.ZipFile(z) as zf:
            zf.extractall(folder)
    (folder / ".DS_Store").write_bytes(b"\0")
    a = prepare(sources, tmp_path / "a", Settings(64, "crop"))
    b = prepare([folder], tmp_path / "b", Settings(64, "crop"))
    assert a.problems == b.problems == [] and sorted(a.written) == sorted(b.written) == sorted(ids)
    for ident in ids:
        for rel in (f"images/{ident}.jpg", f"masks/{ident}_segmentation.png"):
            assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_a_rerun_is_a_noop_and_an_interrupted_run_resumes(tmp_path: Path, capsys) -> None:
    sources, ids = LAYOUTS["isic2018"](tmp_path / "dl")
    args = ["data", "prepare", "--source", *map(str, sources), "--output", str(tmp_path / "out"), "--size", "64"]
    assert main(args) == 0
    before = snapshot(tmp_path / "out")
    assert main(args) == 0
    assert f"0 pairs prepared, {len(ids)} already done" in capsys.readouterr().out
    assert snapshot(tmp_path / "out") == before  # nothing rewritten: same bytes, same mtimes

    # interrupted after two pairs: what was done is recorded, the rest is done by the next run
    class Stop(Exception):
        pass

    def stop_after_two(done: int, total: int) -> None:
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        prepare(sources, tmp_path / "cut", Settings(64), jobs=1, on_progress=stop_after_two)
    kept = json.loads((tmp_path / "cut/manifest.json").read_text())["items"]
    assert len(kept) == 2
    (tmp_path / "cut/images/.ISIC_0000011.jpg.x1y2.tmp.jpg").write_bytes(b"half")  # a kill mid-write
    report = prepare(sources, tmp_path / "cut", Settings(64), jobs=1)
    assert sorted(report.unchanged) == sorted(kept) and len(report.written) == len(ids) - 2
    assert not list((tmp_path / "cut/images").glob(".*"))
    # a deleted output is made again, nothing else
    (tmp_path / "cut/masks/ISIC_0000001_segmentation.png").unlink()
    assert prepare(sources, tmp_path / "cut", Settings(64)).written == ["ISIC_0000001"]
    for rel in before:
        if rel.startswith(("images/", "masks/")) or rel == "ids.txt":
            assert (tmp_path / "cut" / rel).read_bytes() == before[rel][1], rel


def test_bad_files_each_get_one_line_while_the_rest_are_prepared(tmp_path: Path, capsys) -> None:
    members = isic2018_members("Training", [f"ISIC_{i:07d}" for i in range(6)])
    imgs, masks = members.values()
    imgs["ISIC2018_Task1-2_Training_Input/ISIC_0000001.jpg"] = b"\xff\xd8 not a jpeg"            # unreadable
    masks["ISIC2018_Task1_Training_GroundTruth/ISIC_0000002_segmentation.png"] = encode(
        np.zeros((10, 12), np.uint8), "PNG")                                                    # another size
    del masks["ISIC2018_Task1_Training_GroundTruth/ISIC_0000003_segmentation.png"]              # no mask
    masks["ISIC2018_Task1_Training_GroundTruth/ISIC_0000099_segmentation.png"] = encode(
        photo(0)[1], "PNG")                                                                     # no image
    imgs["ISIC2018_Task1-2_Training_Input/notes.docx"] = b"stray"                               # stray
    dl = tmp_path / "dl"
    sources = [write_zip(dl / name, m) for name, m in members.items()]
    # a truncated download: the archive's directory at its end is missing
    good = write_zip(tmp_path / "whole.zip", isic2018_members("Validation", start=20)[
        "ISIC2018_Task1-2_Validation_Input.zip"])
    cut = dl / "ISIC2018_Task1-2_Validation_Input.zip"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size * 2 // 3])
    # an archive with a member that points outside it: refused as a whole, never extracted
    evil = write_zip(dl / "evil.zip", {"../../ISIC_0000077.jpg": encode(photo(1)[0], "JPEG")})
    out = tmp_path / "out"
    code = main(["data", "prepare", "--source", *map(str, sources), str(cut), str(evil), "--output", str(out),
                 "--size", "64"])
    err = capsys.readouterr().err
    assert code == 1
    assert sorted((out / "ids.txt").read_text().split()) == ["ISIC_0000000", "ISIC_0000004", "ISIC_0000005"]
    problems = (out / "problems.txt").read_text().splitlines()
    expected = {"ISIC_0000001.jpg": "not a readable image", "ISIC_0000002_segmentation.png": "mask is 12x10",
                "ISIC_0000003.jpg": "image without mask", "ISIC_0000099_segmentation.png": "mask without image",
                "notes.docx": "stray file", "ISIC2018_Task1-2_Validation_Input.zip": "not a readable ZIP",
                "evil.zip": "points outside the archive"}
    assert len(problems) == len(expected)
    for name, reason in expected.items():
        lines = [line for line in problems if name in line]
        assert len(lines) == 1 and reason in lines[0], (name, problems)
        assert lines[0] in err
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == sorted(
        ["ids.txt", "manifest.json", "problems.txt"] + [f"ISIC_000000{i}.jpg" for i in (0, 4, 5)]
        + [f"ISIC_000000{i}_segmentation.png" for i in (0, 4, 5)])


def ellipse_photo(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A non-square photo: grey-green skin with a saturated blue ellipse off centre; its mask."""
    img = np.full((h, w, 3), (120, 160, 110), np.uint8)
    mask = np.zeros((h, w), np.uint8)
    ell = ((int(w * 0.62), int(h * 0.45)), (int(w * 0.2), int(h * 0.3)), 30.0)
    cv2.ellipse(mask, ell[0], ell[1], ell[2], 0, 360, 255, -1)
    img[mask > 0] = (20, 40, 230)
    return img, mask


def expected_mask(mask: np.ndarray, mode: str, size: int) -> np.ndarray:
    """The source mask carried to the output by this test's own geometry: each output pixel is
    the lesion share of 8x8 sample points mapped back into the photo (outside it: background)."""
    h, w = mask.shape
    side = {"squash": None, "crop": min(w, h), "pad": max(w, h)}[mode]
    if side is None:
        sx, sy, x0, y0 = w / size, h / size, 0.0, 0.0
    else:
        sx = sy = side / size
        x0, y0 = (w - side) / 2, (h - side) / 2  # centred (both sides' pixels differ by at most 1)
        x0, y0 = (np.floor(x0), np.floor(y0)) if mode == "crop" else (-np.floor(-x0), -np.floor(-y0))
    sub = (np.arange(size * 8) + 0.5) / 8
    xs, ys = np.floor(x0 + sub * sx).astype(int), np.floor(y0 + sub * sy).astype(int)
    inside = (ys[:, None] >= 0) & (ys[:, None] < h) & (xs[None] >= 0) & (xs[None] < w)
    samples = np.where(inside, mask[ys.clip(0, h - 1)][:, xs.clip(0, w - 1)] > 0, False)
    return samples.reshape(size, 8, size, 8).mean(axis=(1, 3)) >= 0.5


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("mode", ["squash", "crop", "pad"])
@pytest.mark.parametrize("h, w", [(70, 120), (1200, 1800)])  # the large one is decoded at a reduced scale
def test_image_and_mask_stay_aligned_in_each_resize_mode(mode: str, h: int, w: int, tmp_path: Path) -> None:
    img, mask = ellipse_photo(h, w)
    write_zip(tmp_path / "src.zip", {"in/ISIC_0000001.jpg": encode(img, "JPEG"),
                                     "gt/ISIC_0000001_segmentation.png": encode(mask, "PNG")})
    assert prepare([tmp_path / "src.zip"], tmp_path / "out", Settings(64, mode)).problems == []
    out_img = read(tmp_path / "out/images/ISIC_0000001.jpg").astype(int)
    out_mask = read(tmp_path / "out/masks/ISIC_0000001_segmentation.png") == 255
    blue = (out_img[..., 2] > 130) & (out_img[..., 0] < 80)
    assert iou(blue, out_mask) > 0.9  # the mask covers the blue region of the written image
    expected = expected_mask(mask, mode, 64)
    assert iou(out_mask, expected) > 0.97  # both where the geometry puts them
    assert iou(out_mask, np.roll(expected, 1, axis=1)) < 0.95  # (a one-pixel shift would show)
    if mode == "pad":  # the photo is wider than high: black bands above and below
        assert out_img[:4].max() < 20 and out_img[-4:].max() < 20 and not out_mask[:4].any()
    if mode == "crop":  # the sides are cut: the canvas is all photo
        assert out_img.min(axis=2).max() > 100 and out_img[..., 1].min() > 20


def test_the_transform_plan_of_each_mode() -> None:
    assert plan(120, 70, 64, "squash").box == (0, 0, 120, 70)
    assert plan(120, 70, 64, "crop").box == (25, 0, 95, 70)
    assert plan(120, 70, 64, "pad").box == (0, -25, 120, 95)
    assert plan(120, 71, 64, "pad").box == (0, -24, 120, 96) and plan(121, 70, 64, "crop").box == (25, 0, 95, 70)
    assert plan(120, 70, None, "crop").size == (70, 70) and plan(120, 70, None, "pad").size == (120, 120)
    assert plan(120, 70, None, "squash").size == (120, 70) and plan(120, 70, 64, "squash").size == (64, 64)


def test_full_size_keeps_the_original_jpeg_and_mask_pixels(tmp_path: Path) -> None:
    sources, ids = LAYOUTS["isic2016"](tmp_path / "dl")
    prepare(sources, tmp_path / "out", Settings(None, "squash"))
    manifest = json.loads((tmp_path / "out/manifest.json").read_text())
    with zipfile.ZipFile(sources[1]) as gt:
        for ident in ids:
            item = manifest["items"][ident]
            assert item["output"]["image_sha256"] == item["image"]["sha256"]  # the JPEG itself, not re-encoded
            original = np.asarray(Image.open(io.BytesIO(gt.read(
                f"ISBI2016_ISIC_Part1_Training_GroundTruth/{ident}_Segmentation.png"))))
            assert np.array_equal(read(tmp_path / f"out/masks/{ident}_segmentation.png"), original)


@pytest.mark.parametrize("case, needle", [
    ("missing source", "source not found"),
    ("not a prepared folder", "not a prepared folder"),
    ("other settings", "was prepared with --size 64 --resize squash"),
    ("no masks", "no image/mask pairs found"),
])
def test_command_errors_are_one_line_with_exit_code_2(case: str, needle: str, tmp_path: Path, capsys) -> None:
    sources, _ = LAYOUTS["isic2016"](tmp_path / "dl")
    out = tmp_path / "out"
    args = ["data", "prepare", "--source", *map(str, sources), "--output", str(out), "--size", "64"]
    if case == "missing source":
        args[3] = str(tmp_path / "nowhere.zip")
    elif case == "not a prepared folder":
        out.mkdir()
        (out / "holiday.jpg").write_bytes(b"mine")
    elif case == "other settings":
        assert main(args) == 0
        args += ["--resize", "crop"]
        capsys.readouterr()
    else:
        args = ["data", "prepare", "--source", str(sources[0]), "--output", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert needle in err[-1] and err[-1].startswith("lesionseg: error: ")
    if case == "not a prepared folder":
        assert sorted(p.name for p in out.iterdir()) == ["holiday.jpg"]


def test_size_and_quality_arguments_are_checked(capsys) -> None:
    for bad in (["--size", "big"], ["--size", "8"], ["--jpeg-quality", "101"]):
        with pytest.raises(SystemExit) as e:
            main(["data", "prepare", "--source", "x", "--output", "y", *bad])
        assert e.value.code == 2
    assert "use e.g. 256, 384, 512 or none" in capsys.readouterr().err


def test_a_prepared_folder_inside_a_source_is_not_read_again(tmp_path: Path) -> None:
    sources, ids = LAYOUTS["ph2"](tmp_path)
    inside = sources[0] / "prepared"
    prepare(sources, inside, Settings(64))
    shutil.copytree(inside, sources[0] / "copy_of_prepared")
    report = prepare(sources, tmp_path / "again", Settings(64))  # the folder holds two prepared copies
    assert report.problems == [] and sorted(report.written) == sorted(ids)


def test_library_errors_name_the_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(PrepareError, match="is a file, not a folder"):
        prepare([tmp_path], tmp_path / "file")
    with pytest.raises(ValueError, match="unknown resize mode"):
        Settings(64, "stretch")
    assert os.listdir(tmp_path) == ["file"]


def test_the_outside_alignment_check_passes_prepared_data_and_catches_a_shifted_mask(tmp_path: Path, capsys) -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts/check_prepare_alignment.py"
    spec = importlib.util.spec_from_file_location("check_prepare_alignment", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    members = {"in/ISIC_0000001.jpg": encode(ellipse_photo(300, 400)[0], "JPEG"),
               "gt/ISIC_0000001_segmentation.png": encode(ellipse_photo(300, 400)[1], "PNG"),
               "in/ISIC_0000002.jpg": encode(ellipse_photo(420, 280)[0], "JPEG"),
               "gt/ISIC_0000002_segmentation.png": encode(ellipse_photo(420, 280)[1], "PNG")}
    src = write_zip(tmp_path / "src.zip", members)
    assert script.main(["--source", str(src), "--size", "64", "--resize", "crop"]) == 0  # runs data prepare
    assert "crop: 2 images" in capsys.readouterr().out
    prepare([src], tmp_path / "pad", Settings(64, "pad"))
    assert script.main(["--source", str(src), "--prepared", str(tmp_path / "pad")]) == 0
    mask_path = tmp_path / "pad/masks/ISIC_0000002_segmentation.png"
    Image.fromarray(np.roll(read(mask_path), 3, axis=1)).save(mask_path)
    image_path = tmp_path / "pad/images/ISIC_0000001.jpg"
    Image.fromarray(np.roll(read(image_path), 1, axis=0)).save(image_path, quality=95)
    assert script.main(["--source", str(src), "--prepared", str(tmp_path / "pad")]) == 1
    out = capsys.readouterr().out
    assert "FAILED ISIC_0000002 (pad): mask IoU" in out and "FAILED ISIC_0000001 (pad)" in out


def test_rgba_16_bit_and_exif_rotated_photos_with_01_rgb_masks(tmp_path: Path) -> None:
    img, mask = ellipse_photo(60, 90)
    rgba = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    gray16 = (img.mean(axis=2).astype(np.uint16) * 257)
    # a JPEG stored landscape with EXIF orientation 6 (shown turned 90 degrees): its mask is drawn upright
    exif = Image.Exif()
    exif[0x0112] = 6
    turned = io.BytesIO()
    Image.fromarray(img).save(turned, "JPEG", quality=95, exif=exif.tobytes())
    upright_mask = np.asarray(Image.fromarray(mask).transpose(Image.Transpose.ROTATE_270))
    members = {"i/ISIC_0000001.png": encode(rgba, "PNG"), "m/ISIC_0000001_segmentation.png": encode(mask // 255, "PNG"),
               "i/ISIC_0000002.png": encode(gray16, "PNG"),
               "m/ISIC_0000002_segmentation.png": encode(np.dstack([mask] * 3), "PNG"),
               "i/ISIC_0000003.jpg": turned.getvalue(), "m/ISIC_0000003_segmentation.png": encode(upright_mask, "PNG"),
               "i/ISIC_0000004.jpg": turned.getvalue(), "m/ISIC_0000004_segmentation.png": encode(mask, "PNG")}
    report = prepare([write_zip(tmp_path / "odd.zip", members)], tmp_path / "out", Settings(64, "pad"))
    assert sorted(report.written) == ["ISIC_0000001", "ISIC_0000002", "ISIC_0000003"]
    assert len(report.problems) == 1 and "mask is 90x60 but its image" in report.problems[0]
    assert "as displayed (EXIF orientation 6)" in report.problems[0]
    for ident in ("ISIC_0000001", "ISIC_0000003"):
        out_img = read(tmp_path / f"out/images/{ident}.jpg").astype(int)
        out_mask = read(tmp_path / f"out/masks/{ident}_segmentation.png") == 255
        assert iou((out_img[..., 2] > 130) & (out_img[..., 0] < 80), out_mask) > 0.9, ident
    m2 = read(tmp_path / "out/masks/ISIC_0000002_segmentation.png")
    assert m2.ndim == 2 and set(np.unique(m2)) == {0, 255}
    assert iou(m2 == 255, read(tmp_path / "out/masks/ISIC_0000001_segmentation.png") == 255) > 0.99
