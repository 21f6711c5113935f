"""The app's flip TTA: the plain outline is shown first, the flipped views follow from the same
event (a generator), and the overlay is then redrawn at the slider's value of that moment."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from conftest import draw_lesion
from lesionseg.inference import Predictor
from lesionseg.ui import handlers


def _photo(tmp_path, h: int = 480, w: int = 640):
    path = tmp_path / "photo.jpg"
    buf = io.BytesIO()
    Image.fromarray(draw_lesion(h, w, seed=8)[0]).save(buf, format="JPEG", quality=92)
    path.write_bytes(buf.getvalue())
    return path


@pytest.fixture(scope="module")
def tta_predictor() -> Predictor:
    # exact fp32, so the two-step and one-step results compare to rounding (the fast paths differ
    # slightly between batch sizes)
    return Predictor.from_weights(device="cpu", tta=True, fast=False)


def test_first_outline_is_plain_and_the_tta_views_follow_in_one_more_call(tta_predictor, tmp_path):
    h = handlers.Handlers(tta_predictor)
    path = _photo(tmp_path)
    steps = h.segment(str(path), 0.4, None)
    first = next(steps)
    result = first[0]
    assert tta_predictor.calls == 1 and not result.has_tta  # one plain view before anything shows
    assert result.tta_pending  # correction clicks wait for the flipped views, which replace the state
    assert first[1].shape[:2] == (480, 640) and "adding flip TTA" in first[6]
    later = next(steps)
    assert tta_predictor.calls == 2 and later[0].has_tta and "· flip TTA" in later[6] and "adding" not in later[6]
    assert not later[0].tta_pending
    assert [isinstance(v, dict) for v in later] == [False, True, True, False, False, True, False, True]
    with pytest.raises(StopIteration):
        next(steps)
    # the two-step result is the one-step TTA prediction
    _, direct = tta_predictor.predict_file(path, threshold=0.4, tta=True)
    np.testing.assert_allclose(later[0].prediction.prob, direct.prob, atol=1e-5)
    np.testing.assert_allclose(later[0].prediction.uncertainty, direct.uncertainty, atol=1e-5)
    assert later[4].shape == first[4].shape and not np.array_equal(later[4], first[4])  # uncertainty drawn
    # the redraw reads the slider as it is now, not as it was at the upload
    calls = tta_predictor.calls
    ov, mask, meas, _ = handlers.redraw_tta(later[0], 0.9, None)
    assert tta_predictor.calls == calls
    assert np.array_equal(mask, later[0].prediction.mask_at((480, 640), 0.9) * 255)
    assert all(isinstance(v, dict) for v in handlers.redraw_tta(result, 0.4, None))  # a plain result: drawn


def test_without_tta_one_update_and_no_model_input_kept(tmp_path):
    plain = Predictor.from_weights(device="cpu", tta=False, fast=False)
    steps = list(handlers.Handlers(plain).segment(str(_photo(tmp_path, 240, 320)), 0.4, None))
    assert len(steps) == 1 and plain.calls == 1 and not steps[0][0].tta_pending
    # the model input is kept only for the click refiner, where the weights have one
    assert (steps[0][0].model_input is not None) == plain.can_refine and "TTA" not in steps[0][6]


def test_add_tta_refuses_a_tta_prediction(tta_predictor):
    rgb = draw_lesion(96, 128, seed=2)[0]
    with pytest.raises(ValueError, match="already has the flip-TTA views"):
        tta_predictor.add_tta(rgb, tta_predictor.predict(rgb, tta=True))
