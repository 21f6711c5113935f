"""The wide view (lesionseg/inference/wide_view.py): a zoomed-out second look at photos whose
outline touches the border, combined with the plain view by the pixel-wise maximum."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lesionseg.inference.predictor import Predictor
from lesionseg.inference.wide_view import (MIN_BORDER_FRACTION, border_fraction, check_wide_view, narrow,
                                           needs_wide_view, widen)
from lesionseg.models import DSAttentionUNet

ROOT = Path(__file__).resolve().parents[1]


def test_border_fraction_counts_the_border_pixels_once():
    m = np.zeros((10, 20), np.uint8)
    assert border_fraction(m) == 0.0
    m[0, :] = 1  # the top row: 20 of the 2 * 20 + 2 * 8 = 56 border pixels
    assert border_fraction(m) == pytest.approx(20 / 56)
    m[:] = 1
    assert border_fraction(m) == 1.0
    m[:] = 0
    m[3:7, 5:15] = 1  # inside: no border pixel
    assert border_fraction(m) == 0.0


def test_the_gate_is_strictly_above_the_minimum_fraction():
    s = 40
    border = 4 * s - 4
    prob = np.zeros((s, s), np.float32)
    k = int(MIN_BORDER_FRACTION * border)  # at or under the fraction: no wide view
    prob[0, :k] = 0.9
    assert not needs_wide_view(prob, 0.5)
    prob[0, :k + 2] = 0.9
    assert needs_wide_view(prob, 0.5)
    assert not needs_wide_view(prob, 0.95)  # cut above those pixels' probability


def test_widen_then_narrow_puts_the_map_back_in_place():
    """A map drawn into the image comes back where it was after the zoom-out and its inverse."""
    s = 96
    mask = np.zeros((s, s), np.uint8)
    mask[:, 60:] = 1  # a region touching three sides
    rgb = np.repeat((mask * 255)[..., None], 3, axis=2).astype(np.uint8)
    wide = widen(rgb, 1.5)
    assert wide.shape == rgb.shape and wide.dtype == np.uint8
    m = round(s * 0.25)
    assert (wide[:m // 2 + 1] == wide[0, 0]).all()  # the margin is one colour: the median (0 here)
    back = narrow(wide[..., 0].astype(np.float32) / 255.0, 1.5) >= 0.5
    inter, union = np.logical_and(back, mask).sum(), np.logical_or(back, mask).sum()
    assert inter / union > 0.95
    with pytest.raises(ValueError, match="square"):
        widen(np.zeros((4, 6, 3), np.uint8), 1.5)


@pytest.mark.parametrize("bad", [0.5, 1.0, 4.5, -1])
def test_a_factor_out_of_range_is_refused(bad):
    with pytest.raises(ValueError, match=r"0 \(off\) or in \(1, 4\]"):
        check_wide_view(bad)
    with pytest.raises(ValueError, match="inference_wide_view"):
        DSAttentionUNet(encoder_channels=[8, 16, 32, 64], decoder_channels=[32, 16, 8], inference_wide_view=bad)


@pytest.fixture(scope="module")
def shipped() -> Predictor:
    """The shipped weights asked for the wide view (they do not take it by default)."""
    return Predictor.from_weights(ROOT / "weights", device="cpu", fast=False, wide_view=1.5)


def test_weights_opt_in_through_config_json_and_old_folders_do_not(tiny_model_dir, tiny_model_kwargs, tmp_path):
    old = tmp_path / "old"  # a folder saved before the wide view existed
    shutil.copytree(tiny_model_dir, old)
    config = json.loads((old / "config.json").read_text())
    assert config.pop("inference_wide_view") == 0.0  # saved now: the default, off
    (old / "config.json").write_text(json.dumps(config))
    assert Predictor.from_weights(old, device="cpu", fast=False).wide_view == 0.0
    assert Predictor.from_weights(ROOT / "weights", device="cpu", fast=False).wide_view == 0.0
    DSAttentionUNet(**tiny_model_kwargs, inference_wide_view=2.0).save_pretrained(tmp_path / "new")
    assert json.loads((tmp_path / "new" / "config.json").read_text())["inference_wide_view"] == 2.0
    assert Predictor.from_weights(tmp_path / "new", device="cpu", fast=False).wide_view == 2.0
    assert Predictor.from_weights(tmp_path / "new", device="cpu", fast=False, wide_view=0).wide_view == 0.0


@pytest.fixture(scope="module")
def external(real_data_dir) -> dict[str, np.ndarray]:
    """Three images of the external set (skips without ../shared/data): a lesion cut by the frame
    that the plain view outlines only at its core, one whose plain outline leaks along the border
    while the lesion does not reach it, one well inside the frame."""
    from lesionseg.data.io import load_image

    folder = real_data_dir.parent / "isic2018_extra_256c" / "images"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    names = {"cut": "ISIC_0011084", "leak": "ISIC_0000537", "inside": "ISIC_0000058"}
    return {k: load_image(folder / f"{v}.jpg") for k, v in names.items()}


def test_the_wide_view_is_taken_on_the_border_and_kept_where_it_still_reaches_it(shipped, external):
    calls = shipped.calls
    inside = shipped.predict(external["inside"])
    assert shipped.calls == calls + 1 and inside.lowres_wide is None and inside.lowres is inside.lowres_plain
    leak = shipped.predict(external["leak"])  # the second call is made, and its view dropped
    assert shipped.calls == calls + 3 and leak.lowres_wide is None
    cut = shipped.predict(external["cut"])
    assert shipped.calls == calls + 5
    assert cut.lowres_wide is not None and cut.lowres_wide.shape == cut.lowres_plain.shape
    np.testing.assert_array_equal(cut.lowres, np.maximum(cut.lowres_plain, cut.lowres_wide))
    assert cut.mask.mean() > 0.9 > 0.5 > Predictor.from_weights(ROOT / "weights", device="cpu", fast=False) \
        .predict(external["cut"]).mask.mean()  # the plain view outlines the core only
    # the batch engine takes the same views, the wide ones in one call of their own
    calls = shipped.calls
    batch = shipped.predict_batch([external["inside"], external["cut"], external["leak"]])
    assert shipped.calls == calls + 2
    assert [p.lowres_wide is None for p in batch] == [True, False, True]
    np.testing.assert_allclose(batch[1].lowres, cut.lowres, atol=1e-5)


def test_the_maximum_only_adds_and_the_slider_keeps_the_wide_view(shipped, external):
    off = Predictor.from_weights(ROOT / "weights", device="cpu", fast=False)
    plain = off.predict(external["cut"])
    assert off.calls == 1 and plain.lowres_wide is None
    wide = shipped.predict(external["cut"])
    np.testing.assert_allclose(wide.lowres_plain, plain.lowres, atol=1e-5)
    assert wide.mask.sum() > plain.mask.sum()
    moved = wide.with_threshold(0.6)
    assert moved.lowres_wide is wide.lowres_wide
    np.testing.assert_array_equal(moved.lowres, wide.lowres)


def test_flip_tta_added_later_matches_tta_at_once(shipped, external):
    plain = shipped.predict(external["cut"])
    assert plain.lowres_wide is not None
    later, at_once = shipped.add_tta(external["cut"], plain), shipped.predict(external["cut"], tta=True)
    assert at_once.lowres_wide is not None
    np.testing.assert_allclose(later.lowres, at_once.lowres, atol=1e-4)
    np.testing.assert_allclose(later.lowres_uncertainty, at_once.lowres_uncertainty, atol=1e-4)


def test_the_cli_takes_the_factor_and_refuses_a_bad_one(tmp_path, external):
    from PIL import Image

    img = tmp_path / "in" / "photo.png"
    img.parent.mkdir()
    Image.fromarray(external["cut"]).save(img)
    base = [sys.executable, "-m", "lesionseg", "predict", "--weights", str(ROOT / "weights"), "--no-fast"]
    bad = subprocess.run(base + ["--wide-view", "0.5", "--input_dir", str(img.parent), "--output_dir", str(tmp_path / "bad")],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "--wide-view" in bad.stderr and "(1, 4]" in bad.stderr
    assert not (tmp_path / "bad").exists()
    masks = {}
    for f in ("0", "2"):
        out = tmp_path / f"out{f}"
        r = subprocess.run(base + ["--wide-view", f, "--input_dir", str(img.parent), "--output_dir", str(out)],
                           capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        found = sorted(out.rglob("*mask*.png"))
        assert found, list(out.rglob("*"))
        masks[f] = np.asarray(Image.open(found[0])) > 0
    assert masks["2"].sum() > masks["0"].sum()
    shutil.rmtree(tmp_path / "in")


def test_the_benchmark_counts_the_second_calls_and_renders_them(shipped, external):
    from benchmarks.wide_view import how_often, render

    often = how_often(shipped, {"three": list(external.items())})
    assert often == {"three": {"images": 3, "second_call": 2, "kept": 1}}
    machine = {"bf16_native": True, "date": "today", "isa_caps": "none", "cpu": "a CPU", "cores": 2, "threads": 2,
               "capability": "AVX512", "other_load": "nothing else running", "torch": "2"}
    rows = [{"photo": "outline touches the border", "image": "ISIC_0010323", "border_fraction": 0.09,
             "wide_view_kept": True, "plain_ms": 20.0, "wide_ms": 41.0, "ratio": 2.05}]
    text = render({"machine": machine, "weights": "weights", "factor": 1.5, "runner": "OpenVINO", "how_often": often,
                   "rows": rows})
    assert "| three | 3 | 2 (67%) | 1 (33%) |" in text and "| 20.0 | 41.0 | 2.05x |" in text
