"""Predictor: output sizes, EXIF, reduced decoding, thresholds without model calls, TTA, fast path, outputs."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

from lesionseg.data.io import ImageLoadError, load_mask  # noqa: E402
from lesionseg.data.transforms import normalize, resize_rgb  # noqa: E402
from lesionseg.inference import Prediction, Predictor, write_prediction_outputs  # noqa: E402
from lesionseg.inference.outputs import overlay  # noqa: E402
from lesionseg.metrics import image_metrics  # noqa: E402
from lesionseg.models import DSAttentionUNet  # noqa: E402

SMALL = dict(encoder_channels=[8, 16, 32, 64], decoder_channels=[32, 16, 8])


def disc_image(rng: np.random.Generator, h: int, w: int,
               center: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Skin-coloured (h, w, 3) uint8 with a dark elliptic 'lesion'; its (h, w) {0, 1} mask.

    ``center``: (x, y) as fractions of (w, h); random in [0.2, 0.8] by default."""
    img = np.clip(np.full((h, w, 3), (205, 160, 140), np.float64) + rng.normal(0, 6, (h, w, 3)), 0, 255)
    mask = np.zeros((h, w), np.uint8)
    cx, cy = center if center is not None else (rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8))
    c = (int(cx * w), int(cy * h))
    ax = (max(1, int(rng.uniform(0.12, 0.3) * w)), max(1, int(rng.uniform(0.12, 0.3) * h)))
    cv2.ellipse(mask, c, ax, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    img[mask > 0] = np.clip(np.array([95, 60, 45]) + rng.normal(0, 6, (int(mask.sum()), 3)), 0, 255)
    return img.astype(np.uint8), mask


def train_disc_model(steps: int = 40, size: int = 48) -> DSAttentionUNet:
    """A tiny model trained in ~2 s to find dark discs: predictions that are right, so tests can be too."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    m = DSAttentionUNet(**SMALL, inference_img_size=size, deep_supervision=False, encoder_dropout=0.0)
    data = [disc_image(rng, size, size) for _ in range(64)]
    x = torch.from_numpy(np.stack([normalize(i, m.preprocess_mean, m.preprocess_std) for i, _ in data]))
    y = torch.from_numpy(np.stack([k for _, k in data]).astype(np.float32))[:, None]
    opt = torch.optim.Adam(m.parameters(), lr=5e-3)
    m.train()
    for _ in range(steps):
        idx = torch.randint(0, len(data), (8,))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(m(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # a training run may share this machine; 1 thread is also faster here
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def disc_model() -> DSAttentionUNet:
    return train_disc_model()


@pytest.fixture(scope="module")
def random_model() -> DSAttentionUNet:
    torch.manual_seed(0)
    return DSAttentionUNet(**SMALL, inference_img_size=64).eval()


@pytest.fixture
def predictor(disc_model: DSAttentionUNet) -> Predictor:
    return Predictor(disc_model, fast=False)


@pytest.mark.parametrize("hw", [(250, 333), (1, 7), (64, 64), (517, 91)])
def test_output_size_equals_input(random_model: DSAttentionUNet, hw: tuple[int, int]) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (*hw, 3), dtype=np.uint8)
    p = Predictor(random_model, fast=False, cleanup=False).predict(rgb)
    assert p.prob.shape == hw and p.mask.shape == hw
    assert p.prob.dtype == np.float32 and p.mask.dtype == np.uint8
    assert 0.0 <= p.prob.min() and p.prob.max() <= 1.0
    assert set(np.unique(p.mask)) <= {0, 1}
    assert np.array_equal(p.mask, (p.prob >= p.threshold).astype(np.uint8))
    assert p.uncertainty is None
    # with the clean-up (the default) the probabilities are the same and the mask is the cleaned cut
    q = Predictor(random_model, fast=False).predict(rgb)
    assert np.array_equal(q.prob, p.prob) and q.mask.shape == hw
    assert np.array_equal(q.mask, q.mask_at(hw)) and np.array_equal(q.with_threshold(q.threshold).mask, q.mask)


def test_preprocessing_equals_training(random_model: DSAttentionUNet) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    m = random_model
    x = torch.from_numpy(normalize(resize_rgb(rgb, 64), m.preprocess_mean, m.preprocess_std))[None]
    with torch.inference_mode():
        ref = torch.sigmoid(m(x))[0, 0].numpy()
    got = Predictor(m, fast=False).predict(rgb).prob
    np.testing.assert_allclose(got, ref, atol=1e-6)


@pytest.mark.parametrize("mean, std", [((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), ((0.5, 0.5, 0.5), (0.25, 0.5, 1.0))])
def test_normalize_table_is_bit_identical_to_the_arithmetic(mean, std) -> None:
    # every uint8 value in every channel, plus a non-contiguous view (a crop of a larger photo)
    every = np.stack(np.meshgrid(np.arange(256), np.arange(256), indexing="ij"), -1)[..., [0, 1, 0]].astype(np.uint8)
    crop = np.random.default_rng(3).integers(0, 256, (40, 90, 3), dtype=np.uint8)[5:35, 10:80]
    for rgb in (every, crop):
        x = rgb.astype(np.float32) * (1.0 / 255.0)
        ref = ((x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).transpose(2, 0, 1)
        got = normalize(rgb, list(mean), list(std))
        assert got.dtype == np.float32 and got.flags.c_contiguous and got.shape == ref.shape
        assert np.array_equal(got.view(np.uint32), np.ascontiguousarray(ref).view(np.uint32))
    # other dtypes take the arithmetic itself
    as_float = normalize(crop.astype(np.float32), list(mean), list(std))
    assert np.array_equal(as_float, normalize(crop, list(mean), list(std)))


def test_predictions_are_correct_on_discs(predictor: Predictor) -> None:
    rng = np.random.default_rng(5)
    for hw in [(250, 333), (480, 640)]:
        img, mask = disc_image(rng, *hw)
        assert image_metrics(predictor.predict(img).mask, mask)["dice"] > 0.85


def test_other_input_formats(random_model: DSAttentionUNet) -> None:
    pr = Predictor(random_model, fast=False)
    rgb = np.random.default_rng(2).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    gray = rgb[..., 0]
    np.testing.assert_allclose(pr.predict(gray).prob, pr.predict(np.repeat(gray[..., None], 3, 2)).prob)
    opaque = np.concatenate([rgb, np.full((30, 40, 1), 255, np.uint8)], axis=2)
    np.testing.assert_allclose(pr.predict(opaque).prob, pr.predict(rgb).prob)
    assert pr.predict(rgb.astype(np.uint16) * 257).prob.shape == (30, 40)
    for bad in (rgb.astype(np.float64), np.zeros((30, 40, 2), np.uint8), np.zeros((0, 5, 3), np.uint8)):
        with pytest.raises(ImageLoadError, match="input array"):
            pr.predict(bad)


def test_rethreshold_makes_no_model_call(predictor: Predictor) -> None:
    img, _ = disc_image(np.random.default_rng(3), 120, 150)
    p = predictor.predict(img)
    calls = predictor.calls
    assert calls >= 1
    for t in (0.1, 0.5, 0.9):
        q = p.with_threshold(t)
        assert q.threshold == t and np.array_equal(q.mask, (p.prob >= t).astype(np.uint8))
    assert predictor.calls == calls
    lo, hi = p.with_threshold(0.1).mask.sum(), p.with_threshold(0.9).mask.sum()
    assert lo >= hi and lo > 0
    assert np.array_equal(predictor.predict(img, threshold=0.9).mask, p.with_threshold(0.9).mask)
    with pytest.raises(ValueError):
        p.with_threshold(1.5)


def test_tta_averages_flips_and_gives_uncertainty(predictor: Predictor) -> None:
    img, _ = disc_image(np.random.default_rng(4), 48, 48)  # model size: no resizing in the way
    calls = predictor.calls
    p = predictor.predict(img, tta=True)
    assert predictor.calls == calls + 1  # all four views in one batched forward
    flips = [(lambda a: a), np.fliplr, np.flipud, lambda a: np.flipud(np.fliplr(a))]
    views = [f(predictor.predict(np.ascontiguousarray(f(img)), tta=False).prob) for f in flips]
    np.testing.assert_allclose(p.prob, np.mean(views, axis=0), atol=1e-5)
    np.testing.assert_allclose(p.uncertainty, np.max(views, 0) - np.min(views, 0), atol=1e-5)
    assert p.uncertainty.shape == img.shape[:2] and p.uncertainty.dtype == np.float32
    assert 0.0 <= p.uncertainty.min() and p.uncertainty.max() <= 1.0
    big = predictor.predict(disc_image(np.random.default_rng(4), 201, 133)[0], tta=True)
    assert big.uncertainty.shape == (201, 133)


def test_add_tta_to_a_plain_prediction_equals_predicting_with_tta(predictor: Predictor) -> None:
    img, _ = disc_image(np.random.default_rng(9), 150, 210)
    plain = predictor.predict(img, tta=False, threshold=0.4)
    assert plain.uncertainty is None
    calls = predictor.calls
    added = predictor.add_tta(img, plain)
    assert predictor.calls == calls + 1  # the three flipped views in one call
    full = predictor.predict(img, tta=True, threshold=0.4)
    np.testing.assert_allclose(added.prob, full.prob, atol=1e-5)
    np.testing.assert_allclose(added.uncertainty, full.uncertainty, atol=1e-5)
    assert added.threshold == 0.4 and added.size == (150, 210) and np.array_equal(added.mask, full.mask)


def test_batch_equals_single(predictor: Predictor) -> None:
    rng = np.random.default_rng(6)
    imgs = [disc_image(rng, h, w)[0] for h, w in [(60, 80), (100, 50), (48, 48)]]
    predictor.batch_size = 2
    batch = predictor.predict_batch(imgs)
    for img, b in zip(imgs, batch):
        np.testing.assert_allclose(b.prob, predictor.predict(img).prob, atol=1e-5)


def test_fast_path_agrees_with_fp32(disc_model: DSAttentionUNet) -> None:
    fast, exact = Predictor(disc_model, fast=True), Predictor(disc_model, fast=False)
    assert not exact.fast
    rng = np.random.default_rng(7)
    for hw in [(250, 333), (480, 640), (48, 48)]:
        img, _ = disc_image(rng, *hw)
        a, b = fast.predict(img), exact.predict(img)
        assert image_metrics(a.mask, b.mask)["dice"] >= 0.99
        assert np.abs(a.prob - b.prob).max() < 0.05


def _save_jpeg(path: Path, rgb: np.ndarray, orientation: int | None = None) -> None:
    img = Image.fromarray(rgb)
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    img.save(path, quality=90, exif=exif.tobytes())


def test_large_jpeg_decoded_reduced_but_mask_full_size(tmp_path: Path, predictor: Predictor) -> None:
    img, mask = disc_image(np.random.default_rng(8), 375, 500)
    big = cv2.resize(img, (4000, 3000), interpolation=cv2.INTER_NEAREST)  # fast: no 12 MP noise synthesis
    _save_jpeg(tmp_path / "big.jpg", big)
    rgb, p = predictor.predict_file(tmp_path / "big.jpg")
    assert p.mask.shape == (3000, 4000) and p.prob.shape == (3000, 4000)
    assert rgb.shape[0] < 3000 and rgb.shape[0] >= 2 * predictor.img_size  # reduced-scale JPEG decoding
    full_mask = cv2.resize(mask, (4000, 3000), interpolation=cv2.INTER_NEAREST)
    assert image_metrics(p.mask, full_mask)["dice"] > 0.85


@pytest.mark.parametrize("size", [(300, 400), (3000, 4000)])
@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_exif_rotated_jpeg_stays_upright(tmp_path: Path, predictor: Predictor, size: tuple[int, int],
                                         orientation: int) -> None:
    h, w = size
    img, mask = disc_image(np.random.default_rng(9), 300, 400, center=(0.27, 0.3))  # off-centre: a wrong
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_NEAREST)
    stored_mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)  # rotation would show
    path = tmp_path / "rot.jpg"
    _save_jpeg(path, img, orientation)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(path)).size[::-1])  # (H, W) as displayed
    expected = np.asarray(ImageOps.exif_transpose(_with_orientation(stored_mask, orientation)))
    rgb, p = predictor.predict_file(path)
    assert p.mask.shape == tuple(upright) == expected.shape
    assert image_metrics(p.mask, expected)["dice"] > 0.85


def _with_orientation(mask: np.ndarray, orientation: int) -> Image.Image:
    im = Image.fromarray(mask)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.info["exif"] = exif.tobytes()
    return im


def test_write_prediction_outputs(tmp_path: Path, predictor: Predictor) -> None:
    img, _ = disc_image(np.random.default_rng(10), 250, 333)
    small = cv2.resize(img, (166, 125))  # as if decoded at half scale
    p = predictor.predict(img)
    paths = write_prediction_outputs(tmp_path / "out", "ISIC_1", small, p)
    assert sorted(paths) == ["mask", "overlay", "result"]
    assert paths["mask"].name == "ISIC_1_mask.png"
    written = np.asarray(Image.open(paths["mask"]))
    assert written.shape == (250, 333) and set(np.unique(written)) <= {0, 255}
    assert np.array_equal(load_mask(paths["mask"]), p.mask)
    assert Image.open(paths["overlay"]).size == (333, 250)
    assert Image.open(paths["result"]).size == (3 * 333, 250)
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == sorted(q.name for q in paths.values())


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (97, 131)])
def test_overlay_blend_equals_pixel_by_pixel_reference(shape) -> None:
    rng = np.random.default_rng(shape[1])
    rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    mask = (rng.random(shape) < 0.4).astype(bool)  # bool or {0, 1} masks alike
    out = overlay(rgb, mask, outline=False)
    color, alpha = np.array([255, 64, 0], np.float32), 0.35
    ref = rgb.copy()
    ref[mask] = np.round(rgb[mask].astype(np.float32) * (1 - alpha) + color * alpha).astype(np.uint8)
    assert np.array_equal(out, ref)


def test_overlay_only_touches_the_lesion() -> None:
    rgb = np.full((50, 60, 3), 100, np.uint8)
    mask = np.zeros((50, 60), np.uint8)
    mask[10:30, 20:40] = 1
    out = overlay(rgb, mask)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    outside = np.ones_like(mask, bool)
    outside[8:32, 18:42] = False  # lesion plus the outline's reach
    assert np.array_equal(out[outside], rgb[outside])
    assert not np.array_equal(out[15, 30], rgb[15, 30])
    assert np.array_equal(overlay(rgb, np.zeros_like(mask)), rgb)
    assert isinstance(Prediction.from_arrays(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint8), 0.5).lesion_fraction,
                      float)


@pytest.mark.parametrize("t", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("size", [(300, 417), (64, 50)])
def test_full_size_mask_is_the_clipped_probability_cut_at_the_threshold(t: float, size: tuple[int, int]) -> None:
    """The mask skips clamping the resampled map to [0, 1] (one pass less per photo); it must equal
    the clamped map cut at the same threshold, t = 0 (every pixel) and t = 1 included."""
    rng = np.random.default_rng(0)
    low = cv2.GaussianBlur(rng.random((128, 128)).astype(np.float32), (0, 0), 3)
    low = np.clip((low - low.min()) / (low.max() - low.min()), 0, 1)
    low[40:60, 40:60] = 1.0
    low[:10] = 0.0
    pred = Prediction(low, size, t)
    want = (pred.prob >= t).astype(np.uint8)  # the kept full-size map, clamped to [0, 1]
    fresh = Prediction(low, size, t)  # the mask computed first, before .prob
    np.testing.assert_array_equal(fresh.mask, want)
    np.testing.assert_array_equal(pred.mask, want)
    np.testing.assert_array_equal(Prediction(low, (128, 128), 0.5).mask_at(size, t), want)
    assert fresh.mask.dtype == np.uint8 and fresh.mask.flags.writeable


def test_numpy_sigmoid_matches_torch_without_overflow() -> None:
    """The Predictor's sigmoid runs in numpy (prediction.sigmoid): the same probabilities as torch's,
    float32, and no overflow warning for logits far below zero."""
    import warnings

    from lesionseg.inference.prediction import sigmoid

    x = np.concatenate([np.linspace(-200, 200, 4001), [0.0, -0.0, 1e-8, -1e-8]]).astype(np.float32).reshape(1, -1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow in exp would raise here
        got = sigmoid(x)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, torch.sigmoid(torch.from_numpy(x)).numpy(), rtol=1e-6, atol=1e-7)
    assert got.min() >= 0 and got.max() <= 1 and got[0, -4] == 0.5
