"""Bad inputs, one matrix, every door: ``lesionseg predict / inference / evaluate / train`` and
:meth:`Predictor.predict_file` (the app's door is in ``test_bad_input_app.py``).

Same outcome at each door: a file that can be read works (mask at its upright size); any other
gives a one-line message naming the file and the problem, exit code 2 (1 for a batch whose other
files were written), no traceback and no output file for it. Cases live in ``bad_inputs.py``.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bad_inputs import GOOD, IMAGE_CASES, MASK_CASES, WEIGHTS_CASES, ImageCase, build_images, labelled_set, photo
from lesionseg.cli.main import main
from lesionseg.data.io import MAX_PIXELS_ENV, ImageLoadError
from lesionseg.data.pairing import DataError
from lesionseg.inference import Predictor
from lesionseg.inference.weights import WeightsError

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
       "NO_ALBUMENTATIONS_UPDATE": "1"}
TINY = json.dumps({"encoder_channels": [8, 16, 32, 64], "decoder_channels": [32, 16, 8], "norm_groups": 4})
ALL = IMAGE_CASES + [GOOD]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_images(tmp_path_factory.mktemp("bad") / "in")


@pytest.fixture(scope="module")
def predictor(tiny_model_dir: Path) -> Predictor:
    return Predictor.from_weights(tiny_model_dir, device="cpu", fast=False)


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("lesionseg: error:")]


def assert_message(message: str, case: ImageCase) -> None:
    assert "\n" not in message.strip() and "Traceback" not in message
    assert case.filename in message, message
    assert case.needle in message, message


def _cli(*args: str) -> list[str]:
    return [*args, "--device", "cpu", "--no-fast"]


# -- Predictor.predict_file ----------------------------------------------------------------------

@pytest.mark.parametrize("case", ALL, ids=lambda c: c.id)
def test_predictor_door(case: ImageCase, inputs: dict[str, Path], predictor: Predictor) -> None:
    if case.ok:
        rgb, pred = predictor.predict_file(inputs[case.id])
        assert pred.mask.shape == case.shape and rgb.dtype == np.uint8 and rgb.shape[2] == 3
        return
    with pytest.raises(ImageLoadError) as err:
        predictor.predict_file(inputs[case.id])
    assert_message(str(err.value), case)


# -- lesionseg inference: one file --------------------------------------------------------------

@pytest.mark.parametrize("case", ALL, ids=lambda c: c.id)
def test_cli_inference_door(case: ImageCase, inputs: dict[str, Path], tiny_model_dir: Path, tmp_path: Path,
                            capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    rc = main(_cli("inference", "--weights", str(tiny_model_dir), "--input", str(inputs[case.id]),
                   "--output_dir", str(out)))
    captured = capsys.readouterr()
    errors = error_lines(captured.err)
    stem = Path(case.filename).stem
    if case.ok:
        assert rc == 0 and not errors, captured.err
        assert np.asarray(Image.open(out / f"{stem}_mask.png")).shape == case.shape
        assert {f.name for f in out.iterdir()} == {f"{stem}_{k}.png" for k in ("mask", "overlay", "result")}
    else:
        assert rc == 2 and len(errors) == 1, captured.err
        assert_message(errors[0], case)
        assert not out.exists() or not list(out.iterdir())  # nothing half-written


# -- lesionseg predict: the whole matrix as one batch, in a real process ------------------------

@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cli_predict_door_batch(inputs: dict[str, Path], tiny_model_dir: Path, tmp_path: Path) -> None:
    src, out = inputs[GOOD.id].parent, tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "lesionseg", "predict", "--weights", str(tiny_model_dir),
                           "--input_dir", str(src), "--output_dir", str(out), "--device", "cpu"],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 1, proc.stderr  # some inputs failed, the others were written
    assert "Traceback" not in proc.stderr
    with open(out / "predictions.csv", newline="") as f:
        rows = {r["file"]: r for r in csv.DictReader(f)}
    assert sorted(rows) == sorted(c.filename for c in ALL)
    for case in ALL:
        row, stem = rows[case.filename], Path(case.filename).stem
        written = sorted(p.name for p in out.glob(f"{stem}_*.png"))
        if case.ok:
            assert row["status"] == "ok", row
            assert (int(row["height"]), int(row["width"])) == case.shape
            assert np.asarray(Image.open(out / f"{stem}_mask.png")).shape == case.shape
            assert len(written) == 3
        else:
            assert row["status"] == "error" and written == [], (row, written)
            assert_message(row["error"], case)
            assert any(case.filename in line and case.needle in line for line in proc.stderr.splitlines())
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


# -- pixel limit: environment and --max-pixels --------------------------------------------------

def test_pixel_limit_env_and_flag(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                  monkeypatch: pytest.MonkeyPatch, predictor: Predictor) -> None:
    img = tmp_path / "wide.png"
    Image.fromarray(photo(200, 300)).save(img)  # 60,000 pixels
    args = _cli("inference", "--weights", str(tiny_model_dir), "--input", str(img), "--output_dir",
                str(tmp_path / "o"))
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    assert main([*args, "--max-pixels", "50000"]) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "wide.png" in err[0] and "megapixels" in err[0] and "--max-pixels" in err[0]
    assert MAX_PIXELS_ENV not in os.environ  # the flag does not leak past the command
    assert main([*args, "--max-pixels", "60000"]) == 0
    monkeypatch.setenv(MAX_PIXELS_ENV, "50000")
    with pytest.raises(ImageLoadError, match="megapixels"):
        predictor.predict_file(img)
    assert main(args) == 2 and "megapixels" in capsys.readouterr().err
    assert main([*args, "--max-pixels", "60000"]) == 0  # the flag wins over the environment
    assert os.environ[MAX_PIXELS_ENV] == "50000"
    with pytest.raises(SystemExit) as exc:
        main([*args, "--max-pixels", "0"])
    assert exc.value.code == 2


# -- masks: evaluate (library and CLI) and train --------------------------------------------------

@pytest.mark.parametrize("case", MASK_CASES, ids=lambda c: c.id)
def test_evaluate_doors(case, tiny_model_dir: Path, predictor: Predictor, tmp_path: Path,
                        capsys: pytest.CaptureFixture) -> None:
    from lesionseg.evaluation import evaluate

    root = tmp_path / "data"
    case.build(root)
    rc = main(_cli("evaluate", "--weights", str(tiny_model_dir), "--data-dir", str(root), "--json",
                   str(tmp_path / "r.json")))
    captured = capsys.readouterr()
    errors = error_lines(captured.err)
    if case.ok:
        assert rc == 0 and not errors, captured.err
        assert json.loads((tmp_path / "r.json").read_text())["n_images"] == 4
        assert evaluate(predictor, root / "images", root / "masks")["n_images"] == 4
        return
    assert rc == 2 and len(errors) == 1, captured.err
    assert case.culprit in errors[0] and case.needle in errors[0], errors[0]
    assert not (tmp_path / "r.json").exists()
    with pytest.raises((DataError, ImageLoadError)) as err:
        evaluate(predictor, root / "images", root / "masks")
    assert case.culprit in str(err.value) and case.needle in str(err.value)


def _train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "train_cli.py"), *args, "--img_size", "32", "--batch_size", "2",
                           "--model", TINY, "--workers", "0", "--epochs", "1", "--max-steps-per-epoch", "1",
                           "--device", "cpu", "--no-amp"],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("case", [c for c in MASK_CASES if not c.ok], ids=lambda c: c.id)
def test_train_door_refuses_bad_sets(case, tmp_path: Path) -> None:
    case.build(tmp_path / "data")
    r = _train("--data-dir", str(tmp_path / "data"), "--output-dir", str(tmp_path / "runs"))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and case.culprit in r.stderr and case.needle in r.stderr
    assert not list((tmp_path / "runs").rglob("*.pth")) if (tmp_path / "runs").exists() else True


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_train_door_accepts_0_1_and_rgb_masks(tmp_path: Path) -> None:
    root = labelled_set(tmp_path / "data", n=10, style="01")
    labelled_set(tmp_path / "rgb", n=10, style="rgb")
    for f in list((tmp_path / "rgb" / "masks").iterdir())[:5]:  # half of the masks RGB, half {0, 1}
        f.replace(root / "masks" / f.name)
    r = _train("--data-dir", str(root), "--output-dir", str(tmp_path / "runs"), "--run-name", "r")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "runs" / "r" / "models").is_dir()


# -- weights ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", WEIGHTS_CASES, ids=lambda c: c.id)
def test_weights_doors(case, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = case.build(tiny_model_dir, tmp_path / "w")
    img = tmp_path / "a.png"
    Image.fromarray(photo()).save(img)
    labelled_set(tmp_path / "data")
    commands = {
        "predict": ["predict", "--input_dir", str(img.parent), "--output_dir", str(tmp_path / "p")],
        "inference": ["inference", "--input", str(img), "--output_dir", str(tmp_path / "i")],
        "evaluate": ["evaluate", "--data-dir", str(tmp_path / "data")],
    }
    for name, args in commands.items():
        rc = main(_cli(*args, "--weights", source))
        errors = error_lines(capsys.readouterr().err)
        assert rc == 2 and len(errors) == 1, (name, errors)
        assert case.needle in errors[0] and source in errors[0], (name, errors[0])
    for out in ("p", "i"):
        assert not (tmp_path / out).exists() or not list((tmp_path / out).glob("*.png"))
    with pytest.raises(WeightsError, match=case.needle):
        Predictor.from_weights(source, device="cpu")
    if case.id == "pickle_refused":  # trusted on request: loaded weights-only
        assert main(_cli(*commands["inference"], "--weights", source, "--allow-pickle")) == 0
        assert Predictor.from_weights(source, device="cpu", allow_pickle=True).img_size == 64


# -- outputs that cannot be written -------------------------------------------------------------

def test_output_under_a_regular_file(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """As root chmod does not stop writes, so the unwritable folder is a path under a regular file."""
    (tmp_path / "file").write_text("x")
    img = tmp_path / "a.png"
    Image.fromarray(photo()).save(img)
    labelled_set(tmp_path / "data")
    runs = {
        "inference": ["inference", "--input", str(img), "--output_dir", str(tmp_path / "file" / "sub")],
        "predict": ["predict", "--input_dir", str(tmp_path), "--output_dir", str(tmp_path / "file" / "sub")],
        "evaluate": ["evaluate", "--data-dir", str(tmp_path / "data"), "--json", str(tmp_path / "file" / "r.json")],
    }
    for name, args in runs.items():
        rc = main(_cli(*args, "--weights", str(tiny_model_dir)))
        errors = error_lines(capsys.readouterr().err)
        assert rc == 3 and len(errors) == 1 and "file" in errors[0], (name, errors)
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads files without read permission")
def test_unreadable_file_at_every_door(tiny_model_dir: Path, predictor: Predictor, tmp_path: Path,
                                       capsys: pytest.CaptureFixture) -> None:
    locked = tmp_path / "in" / "locked.png"
    locked.parent.mkdir()
    Image.fromarray(photo()).save(locked)
    locked.chmod(0)
    try:
        with pytest.raises(ImageLoadError, match="permission"):
            predictor.predict_file(locked)
        rc = main(_cli("inference", "--weights", str(tiny_model_dir), "--input", str(locked), "--output_dir",
                       str(tmp_path / "o")))
        errors = error_lines(capsys.readouterr().err)
        assert rc == 2 and len(errors) == 1 and "locked.png" in errors[0] and "permission" in errors[0]
        rc = main(_cli("predict", "--weights", str(tiny_model_dir), "--input_dir", str(locked.parent), "--output_dir",
                       str(tmp_path / "p")))
        assert rc == 1 and "permission" in (tmp_path / "p" / "predictions.csv").read_text()
    finally:
        locked.chmod(0o644)
