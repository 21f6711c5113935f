"""Regression guard for the fast inference paths and the benchmark suite (no timing assertions).

The optimised paths (bf16 + channels_last autocast, ONNX Runtime) must give the masks of the
fp32 eager baseline; the ONNX export must round-trip; ``python -m benchmarks --quick`` must run
and write every section. Inputs are deterministic, so nothing here can flake on speed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lesionseg.cli.main import main as cli_main  # noqa: E402
from lesionseg.data.io import load_image  # noqa: E402
from lesionseg.inference import Predictor, load_model  # noqa: E402
from lesionseg.inference.runners import OnnxBackend  # noqa: E402
from lesionseg.metrics import image_metrics  # noqa: E402
from lesionseg.models import DSAttentionUNet  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights"
DATA = ROOT.parent / "shared" / "data" / "isic2017_train_256" / "images"
SMALL = dict(encoder_channels=[8, 16, 32, 64], decoder_channels=[32, 16, 8], inference_img_size=64)
onnx_needed = pytest.mark.skipif(
    not all(__import__("importlib").util.find_spec(m) for m in ("onnx", "onnxruntime")),
    reason="onnx / onnxruntime not installed")


def synthetic(n: int, size: int = 256, seed: int = 0) -> list[np.ndarray]:
    from benchmarks.common import synthetic_images

    return synthetic_images(n, size, seed)


@pytest.fixture(scope="module")
def model() -> DSAttentionUNet:
    if not (WEIGHTS / "model.safetensors").is_file():
        pytest.skip("no shipped weights in weights/")
    return load_model(WEIGHTS)


def real(n: int = 20) -> list[np.ndarray]:
    files = sorted(DATA.glob("*.jpg"))[:n] if DATA.is_dir() else []
    if not files:
        pytest.skip(f"real ISIC images not found at {DATA}")
    return [load_image(f) for f in files]


def mean_dice(a: Predictor, b: Predictor, images: list[np.ndarray]) -> float:
    pa, pb = a.predict_batch(images), b.predict_batch(images)
    return float(np.mean([image_metrics(x.mask, y.mask)["dice"] for x, y in zip(pa, pb)]))


@pytest.mark.data
def test_fast_path_masks_match_fp32_on_real_images(model: DSAttentionUNet) -> None:
    images = real()
    fast, exact = Predictor(model, fast=True), Predictor(model, fast=False)
    assert mean_dice(fast, exact, images) >= 0.99


def test_fast_path_masks_match_fp32_on_synthetic_images(model: DSAttentionUNet) -> None:
    images = synthetic(8) + synthetic(2, 517, seed=1)
    fast, exact = Predictor(model, fast=True), Predictor(model, fast=False)
    assert mean_dice(fast, exact, images) >= 0.99


@onnx_needed
def test_onnx_backend_masks_match_fp32(model: DSAttentionUNet) -> None:
    images = synthetic(6)
    if DATA.is_dir():
        images += real(6)
    onnx, exact = Predictor(model, backend="onnx"), Predictor(model, fast=False)
    assert isinstance(onnx.runner, OnnxBackend) and not onnx.fast
    assert mean_dice(onnx, exact, images) >= 0.99
    a, b = onnx.predict(images[0]), exact.predict(images[0])
    assert np.abs(a.prob - b.prob).max() < 1e-3  # fp32 both: only summation order differs


@onnx_needed
def test_export_cli_round_trip(tmp_path: Path) -> None:
    from lesionseg.inference.onnx_backend import ONNX_NAME, OnnxRunner, check_inputs, compare, weights_digest

    torch.manual_seed(0)
    m = DSAttentionUNet(**SMALL).eval()
    folder = tmp_path / "w"
    m.save_pretrained(folder)
    assert cli_main(["export", "--onnx", "--weights", str(folder)]) == 0
    file = folder / ONNX_NAME
    assert file.is_file() and not list(folder.glob(".*.tmp*"))  # written atomically, no leftovers
    runner = OnnxRunner(file)
    assert runner.digest == weights_digest(m) and runner.img_size == 64
    check = compare(m, runner, check_inputs(64, n=4, seed=3))
    assert check.max_abs_diff < 1e-3 and check.mask_dice >= 0.999
    batch = check_inputs(64, n=3)  # the batch axis is dynamic
    assert runner(batch).shape == (3, 1, 64, 64)

    pred = Predictor.from_weights(folder, device="cpu", backend="onnx")
    assert isinstance(pred.runner, OnnxBackend) and pred.runner.session.digest == runner.digest
    img = synthetic(1, 100)[0]
    ref = Predictor(m, fast=False).predict(img)
    got = pred.predict(img)
    assert got.mask.shape == (100, 100) and np.abs(got.prob - ref.prob).max() < 1e-3
    # TTA runs the four flips as one dynamic batch
    assert pred.predict(img, tta=True).uncertainty.shape == (100, 100)


@onnx_needed
def test_stale_onnx_file_is_not_used(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    a = DSAttentionUNet(**SMALL).eval()
    folder = tmp_path / "w"
    a.save_pretrained(folder)
    assert cli_main(["export", "--onnx", "--weights", str(folder)]) == 0
    torch.manual_seed(1)
    DSAttentionUNet(**SMALL).eval().save_pretrained(folder)  # new weights, old model.onnx
    pred = Predictor.from_weights(folder, device="cpu", backend="onnx")
    from lesionseg.inference.onnx_backend import weights_digest

    assert pred.runner.session.digest == weights_digest(pred.model)
    assert "other weights" in caplog.text


def test_export_safetensors_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    DSAttentionUNet(**SMALL).save_pretrained(tmp_path / "w")
    assert cli_main(["export", "--weights", str(tmp_path / "w"), "--output", str(tmp_path / "copy")]) == 0
    assert load_model(tmp_path / "copy").encoder_channels == SMALL["encoder_channels"]
    assert cli_main(["export", "--weights", str(tmp_path / "missing"), "--onnx"]) == 2
    assert cli_main(["export", "--weights", str(tmp_path / "w")]) == 2  # no --output
    assert "error" in capsys.readouterr().err


def test_unknown_backend_is_refused(model: DSAttentionUNet) -> None:
    with pytest.raises(ValueError, match="backend"):
        Predictor(model, backend="tensorrt")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_benchmarks_quick_writes_every_section(tmp_path: Path) -> None:
    if not (WEIGHTS / "model.safetensors").is_file():
        pytest.skip("no shipped weights in weights/")
    out = tmp_path / "results.md"
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--output", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=880)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    for heading in ["## Machine", "## Targets", "## 1. Model forward", "### 1b. Allocator-neutral", "## 2. FLOPs", "## 3. Peers",
                    "## 4. End to end", "## 5. Batch", "## 6. Training step", "## 7. GPU",
                    "### 1c. One 1024x768 photo", "## 8. Native and AVX2 side by side"]:
        assert heading in text, heading
    assert "- section " not in text, text.split("## Notes")[-1]  # no section failed
    assert out.with_suffix(".json").is_file()
    assert "| capability | torch " in text and "one 1024x768 photo (Predictor.predict + mask)" in text
    encoder = json.loads((WEIGHTS / "config.json").read_text()).get("encoder_name", "unet")
    assert f"the architecture of weights/ ({encoder} encoder" in text  # section 6 times the shipped model's step


def test_side_by_side_reads_the_other_cpu_class(tmp_path: Path) -> None:
    from benchmarks.classes import side_by_side

    res = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    res["machine"].update(capability="torch AVX512, oneDNN cap none, bf16 yes, int8 dot yes", bf16_native=True)
    assert "Not shown: no results_avx2.json" in "\n".join(side_by_side(res, tmp_path))
    avx2 = json.loads(json.dumps(res))
    avx2["machine"].update(capability="torch AVX2, oneDNN cap AVX2, bf16 no, int8 dot no", bf16_native=False)
    avx2["forward"]["rows"][-1]["median_ms"] = 123.4
    (tmp_path / "results_avx2.json").write_text(json.dumps(avx2))
    (tmp_path / "results.json").write_text(json.dumps(res))
    for run in (res, avx2):  # either report shows native first, AVX2 second
        lines = side_by_side(run, tmp_path)
        assert "native: torch AVX512" in lines[2] and "AVX2: torch AVX2" in lines[2]
        forward = next(line for line in lines if line.startswith("| forward 256x256"))
        assert forward.split(" | ")[2].startswith("123.4 vs") and not forward.split(" | ")[1].startswith("123.4")
    # a run written under another name pairs with its own twin, never with the default files
    assert "Not shown: no results_epyc_avx2.json" in "\n".join(side_by_side(res, tmp_path, "results_epyc"))
    avx2["forward"]["rows"][-1]["median_ms"] = 45.6
    (tmp_path / "results_epyc_avx2.json").write_text(json.dumps(avx2))
    forward = next(line for line in side_by_side(res, tmp_path, "results_epyc") if line.startswith("| forward 256x256"))
    assert forward.split(" | ")[2].startswith("45.6 vs")


def test_allocator_neutral_child_keeps_freed_memory_and_the_report_judges_it() -> None:
    if not (WEIGHTS / "model.safetensors").is_file():
        pytest.skip("no shipped weights in weights/")

    from benchmarks.allocator import allocator_neutral_section
    from benchmarks.common import Settings
    from benchmarks.forward import describe
    from benchmarks.report import render, targets

    fa = allocator_neutral_section(Settings(quick=True))
    assert fa["speedup"] > 0 and fa["ours_path"] == describe(Predictor(load_model(WEIGHTS), onnx_folder=str(WEIGHTS)))
    # by default the fp32 baseline faults in ~30 MB per call (section 1); the child's malloc keeps it
    assert fa["baseline"]["page_faults"] < 1000 and fa["ours"]["page_faults"] < 1000
    res = json.loads((ROOT / "benchmarks" / "results.json").read_text())

    def row(r: dict) -> list[str] | None:
        return next((x for x in targets(r) if "allocator-neutral" in x[0]), None)

    for speedup, status in [(2.0, "**not met**"), (2.6, "**met**")]:
        res["forward_alloc"] = dict(fa, speedup=speedup)
        assert row(res)[2] == status and f"{speedup:.2f}x" in row(res)[1]
        assert "### 1b. Allocator-neutral forward" in render(res)
    res["forward_alloc"] = {"skipped": "glibc malloc tunables exist on Linux only"}
    assert row(res) is None and "Not measured: glibc" in render(res)


def test_gpu_section_code_runs_on_the_cpu() -> None:
    # section 7's code only runs where a GPU is lent: run the same code on the CPU so it cannot rot
    if not (WEIGHTS / "model.safetensors").is_file():
        pytest.skip("no shipped weights in weights/")
    from benchmarks.common import Settings
    from benchmarks.gpu import gpu_section

    g = gpu_section(Settings(quick=True), device="cpu")
    assert g["available"] and g["device"] == "cpu"
    assert {r["model"] for r in g["rows"]} >= {"DS-AttentionUNet (ours)"}
    assert all(r["median_ms"] > 0 and r["images_per_s"] > 0 for r in g["rows"] + g["train_rows"])
    assert g["agreement"]["dice_mean"] >= 0.99


def test_report_renders_recorded_gpu_and_accuracy_and_judges_the_peer_target() -> None:
    import copy

    from benchmarks.report import recorded, render, targets

    res = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    res["gpu"] = {"available": False, "note": "no GPU here"}
    res["gpu_recorded"], res["peer_accuracy"] = recorded("results_gpu.json"), recorded("peer_accuracy.json")
    assert res["gpu_recorded"] and res["peer_accuracy"], "the recorded GPU files are committed"
    text = render(res)
    assert "## 3b. Accuracy at equal recipe" in text and "smp_unet_resnet34" in text
    assert "Recorded " in text.split("## 7. GPU")[1] and "H200" in text.split("## 7. GPU")[1]

    def peer_row(r: dict) -> list[str]:
        return next(row for row in targets(r) if "Unet(resnet34)" in row[0])

    runs = {x["model"]: x for x in res["peer_accuracy"]["runs"]}
    ours, peer = runs["ours"]["test_cleaned"]["dice_mean"], runs["smp_unet_resnet34"]["test_cleaned"]["dice_mean"]
    assert peer_row(res)[2] == ("**met**" if ours >= peer else "**not met**")
    worse = copy.deepcopy(res)
    next(x for x in worse["peer_accuracy"]["runs"] if x["model"] == "ours")["test_cleaned"]["dice_mean"] = peer - 0.01
    assert peer_row(worse)[2] == "**not met**"
    worse["peer_accuracy"] = None
    assert peer_row(worse)[2] == "**not met**" and "not measured" in peer_row(worse)[1]


def test_width_benchmark_compares_models_and_rejects_a_folder_without_config(tmp_path: Path) -> None:
    from benchmarks import width

    lean = tmp_path / "lean"
    DSAttentionUNet(**SMALL).save_pretrained(lean)
    evals = tmp_path / "evals"
    evals.mkdir()
    (evals / "eval_test.json").write_text('{"dice_mean": 0.5, "failure_rate": 0.25, "threshold": 0.3}')
    out = tmp_path / "w.md"
    assert width.main(["--quick", "--model", "small", str(lean), str(evals), "--model", "again", str(lean),
                       "--output", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| small") or line.startswith("| again")]
    assert len(rows) == 2 and "8 + 8" in rows[0] and "0.5000 / -" in rows[0] and "25.0% / -" in rows[0]
    result = __import__("json").loads(out.with_suffix(".json").read_text())
    assert all(r["speedup"] > 0 and r["default_ms"] > 0 and 0 <= r["mask_dice_vs_exact"] <= 1 for r in result["rows"])
    with pytest.raises(SystemExit):
        width.main(["--model", "none", str(tmp_path / "missing")])


def test_agreement_benchmark_scores_every_image_of_each_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from benchmarks import agreement

    weights = tmp_path / "w"
    DSAttentionUNet(**SMALL).save_pretrained(weights)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(images / f"im{i}.png")
    (tmp_path / "ids.txt").write_text("im1\nim2\n")
    monkeypatch.setattr(agreement, "SETS", {"listed": (images, tmp_path / "ids.txt"), "all": (images, None),
                                            "missing": (tmp_path / "nowhere", None)})
    out = tmp_path / "a.md"
    assert agreement.main(["--weights", str(weights), "--output", str(out)]) == 0
    rows = __import__("json").loads(out.with_suffix(".json").read_text())["rows"]
    assert [r.get("images") for r in rows] == [2, 4, None] and "skipped" in rows[2]
    assert all(0 <= r["dice_min"] <= r["dice_mean"] <= 1 and r["under_0.95"] <= r["under_0.99"] for r in rows[:2])
    assert "| listed | 2 |" in out.read_text()
