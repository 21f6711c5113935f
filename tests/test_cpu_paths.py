"""The choice of CPU path follows the ISA caps, and the fp32 fast path computes what the eager model does.

torch reads ``ATEN_CPU_CAPABILITY`` once per process, so the checks that set it run in a child process.
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

from lesionseg.data.io import load_image  # noqa: E402
from runner_check import assert_computes_the_eager_model  # noqa: E402
from lesionseg.inference import Predictor, load_model  # noqa: E402
from lesionseg.inference.cpu import FrozenFp32Runner, OnnxFp32Runner, OpenVinoRunner  # noqa: E402
from lesionseg.inference.cpu.openvino import OPENVINO_ENV, openvino_available  # noqa: E402
from lesionseg.inference.cpu.ort import onnx_runtime_available  # noqa: E402
from lesionseg.utils import cpu_isa as capability  # noqa: E402
from lesionseg.metrics import image_metrics  # noqa: E402
from lesionseg.models import DSAttentionUNet  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights"
TEST_IDS = ROOT / "configs" / "isic2017_256" / "test_ids.txt"
DATA = ROOT.parent / "shared" / "data" / "isic2017_train_256"
SMALL = dict(encoder_channels=[8, 16, 32, 64], decoder_channels=[32, 16, 8], inference_img_size=64)
# without OpenVINO (LESIONSEG_OPENVINO=0, or not installed), the fast path where bf16 is not native:
# ONNX Runtime where it is installed (requirements.txt); with it, OpenVINO on every class (below)
NO_OPENVINO = {OPENVINO_ENV: "0"}
AVX2_RUNNER = "OnnxFp32Runner" if onnx_runtime_available() else "FrozenFp32Runner"

CHILD = """
import json, torch
from lesionseg.inference import Predictor
from lesionseg.inference.cpu import cpu_int8_supported
from lesionseg.utils import cpu_isa as capability
from lesionseg.models import DSAttentionUNet
from lesionseg.training.loop import autocast_dtype
m = DSAttentionUNet(encoder_channels=[8, 16, 32, 64], decoder_channels=[32, 16, 8], inference_img_size=64).eval()
print(json.dumps({"torch": capability.torch_capability(), "bf16": capability.cpu_bf16_supported(),
                  "int8": cpu_int8_supported(), "runner": type(Predictor(m).runner).__name__,
                  "amp": str(autocast_dtype(torch.device("cpu"), True))}))
"""


def _child(script: str = CHILD, **env: str) -> dict:
    """The JSON that ``script`` prints last, run with no ISA caps or OpenVINO switch but ``env``."""
    full = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA",
                                                               "DNNL_MAX_CPU_ISA", "LESIONSEG_OPENVINO")}
    out = subprocess.run([sys.executable, "-c", script], env={**full, **env}, cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("env", [{"ATEN_CPU_CAPABILITY": "avx2"}, {"ONEDNN_MAX_CPU_ISA": "AVX2"}])
def test_an_isa_cap_below_bf16_gives_the_fp32_paths(env: dict[str, str]) -> None:
    got = _child(**NO_OPENVINO, **env)
    assert not got["bf16"] and not got["int8"]
    assert got["runner"] == AVX2_RUNNER and got["amp"] == "None"  # no emulated bf16 in training either
    if "ATEN_CPU_CAPABILITY" in env:
        assert got["torch"] == "AVX2"


def test_without_caps_the_path_follows_the_chip() -> None:
    got = _child(**NO_OPENVINO)
    chip_bf16 = bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())
    assert got["bf16"] == (chip_bf16 and got["torch"].startswith("AVX512"))
    assert got["runner"] == ("FrozenBF16Runner" if got["bf16"] else AVX2_RUNNER)
    assert got["amp"] == ("torch.bfloat16" if got["bf16"] else "None")


def test_openvino_is_the_path_on_either_cpu_class_unless_lesionseg_openvino_0() -> None:
    if not openvino_available():
        pytest.skip("openvino not installed")
    for env in ({}, {"ATEN_CPU_CAPABILITY": "avx2"}):  # with LESIONSEG_OPENVINO=0: the two tests above
        assert _child(**env)["runner"] == "OpenVinoRunner"
        assert _child(**{OPENVINO_ENV: "1"}, **env)["runner"] == "OpenVinoRunner"


OPENVINO_KERNELS = """
import json, torch
from lesionseg.inference.cpu import OpenVinoRunner
from lesionseg.models import DSAttentionUNet
torch.manual_seed(0)
m = DSAttentionUNet(encoder_channels=[8, 16, 32, 64], decoder_channels=[32, 16, 8], inference_img_size=64).eval()
print(json.dumps(OpenVinoRunner(m, 64).conv_kernels()))
"""


def test_openvino_kernels_follow_the_onednn_cap() -> None:
    """The caps measure the AVX2 class for the OpenVINO path too (docs/benchmarks.md): its
    convolutions run AVX2 kernels under ONEDNN_MAX_CPU_ISA=AVX2, and AVX-512 ones without it on a
    chip that has AVX-512."""
    if not openvino_available():
        pytest.skip("openvino not installed")
    got = {"capped": _child(OPENVINO_KERNELS, ONEDNN_MAX_CPU_ISA="AVX2"), "native": _child(OPENVINO_KERNELS)}
    assert got["capped"] and not any("avx512" in k for k in got["capped"]), got
    assert any("avx2" in k for k in got["capped"]), got
    if "avx512f" in Path("/proc/cpuinfo").read_text().split():
        assert any("avx512" in k for k in got["native"]), got


@pytest.mark.parametrize("cap,isa,allowed", [("AVX2", "AVX512_CORE_BF16", False), ("avx2", "AVX2", True),
                                             ("AVX512_CORE_AMX", "AVX512_CORE_BF16", True),
                                             ("AVX512_CORE", "AVX512_CORE_VNNI", False),
                                             ("ALL", "AVX512_CORE_BF16", True), ("", "AVX10_1_512_AMX_FP16", True)])
def test_onednn_cap_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch, cap: str, isa: str,
                                                 allowed: bool) -> None:
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert capability.onednn_allows(isa) == allowed
    assert "oneDNN cap" in capability.describe()


def test_fp32_runner_computes_the_eager_model_and_leaves_it_untouched() -> None:
    torch.manual_seed(5)
    model = DSAttentionUNet(**SMALL).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runner = FrozenFp32Runner(model, 64)
    assert runner.gates_swapped + runner.resampling_swapped > 0
    assert_computes_the_eager_model(runner, model)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert next(model.parameters()).is_contiguous()  # the caller's model keeps its memory format


def test_onnx_runner_computes_the_eager_model_per_thread_count_and_leaves_it_untouched() -> None:
    if not onnx_runtime_available():
        pytest.skip("onnx / onnxruntime not installed")
    torch.manual_seed(6)
    model = DSAttentionUNet(**SMALL).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runner = OnnxFp32Runner(model, 64)
    assert not runner.ready and runner.side_by_side
    threads = torch.get_num_threads()
    try:
        for n_threads in (threads, 1):  # the batch workers run one intra-op thread each
            torch.set_num_threads(n_threads)
            assert_computes_the_eager_model(runner, model)
    finally:
        torch.set_num_threads(threads)
    assert runner.ready and sorted(runner._sessions) == sorted({threads, 1}) and runner.name.startswith("onnx")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_in_memory_exports_are_kept_per_weights_and_input_size() -> None:
    if not onnx_runtime_available():
        pytest.skip("onnx / onnxruntime not installed")
    from lesionseg.inference.onnx_backend import OnnxRunner, onnx_source

    torch.manual_seed(8)
    a = DSAttentionUNet(**SMALL).eval()
    same = DSAttentionUNet(**SMALL).eval()
    same.load_state_dict(a.state_dict())
    other_size = DSAttentionUNet(**{**SMALL, "inference_img_size": 96}).eval()
    other_size.load_state_dict(a.state_dict())
    first = onnx_source(a)
    assert onnx_source(same) is first  # the same weights: exported once
    resized = onnx_source(other_size)
    assert resized is not first and OnnxRunner(resized, 1).img_size == 96 and OnnxRunner(first, 1).img_size == 64
    with torch.no_grad():
        a.head.weight.add_(1.0)  # changed weights: a new export
    assert onnx_source(a) is not first


def test_a_saved_model_onnx_is_opened_only_when_readable_and_of_these_weights(tmp_path: Path,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    if not onnx_runtime_available():
        pytest.skip("onnx / onnxruntime not installed")
    from lesionseg.inference.onnx_backend import ONNX_NAME, onnx_source, save_onnx

    torch.manual_seed(9)
    model = DSAttentionUNet(**SMALL).eval()
    save_onnx(model, tmp_path / ONNX_NAME, check=False)
    assert onnx_source(model, tmp_path) == str(tmp_path / ONNX_NAME)
    (tmp_path / ONNX_NAME).write_bytes(b"not an onnx file")  # corrupt: an in-memory export instead
    assert isinstance(onnx_source(model, tmp_path), bytes) and "not a readable ONNX file" in caplog.text


def test_onnx_runner_falls_back_to_the_frozen_trace_when_the_export_fails(monkeypatch: pytest.MonkeyPatch,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    from lesionseg.inference.cpu import ort

    def broken(*_a, **_k):
        raise RuntimeError("exporter broke")

    monkeypatch.setattr(ort, "onnx_source", broken)
    model = DSAttentionUNet(**SMALL).eval()
    runner = OnnxFp32Runner(model, 64)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
    torch.testing.assert_close(runner(x), ref, atol=2e-4, rtol=1e-4)
    assert runner.ready and runner.name == "fp32 channels_last" and "exporter broke" in caplog.text


def test_on_the_avx2_path_the_click_refiner_keeps_the_frozen_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    # its 6-channel input has no ONNX export; the choice as an AVX2 CPU makes it, on any CPU here
    from lesionseg.inference import runners

    monkeypatch.setattr(runners, "cpu_bf16_supported", lambda: False)
    monkeypatch.setattr(runners, "cpu_fp32_fast_supported", lambda: True)
    monkeypatch.setattr(runners, "onnx_runtime_available", lambda: True)
    monkeypatch.setattr(runners, "openvino_enabled", lambda: False)
    refiner = DSAttentionUNet(**SMALL, in_channels=6, click_conditioned=True).eval()
    pred = Predictor(DSAttentionUNet(**SMALL).eval(), refiner=refiner)
    assert isinstance(pred.runner, OnnxFp32Runner) and isinstance(pred.refine_runner, FrozenFp32Runner)
    monkeypatch.setattr(runners, "openvino_enabled", lambda: True)
    pred = Predictor(DSAttentionUNet(**SMALL).eval(), refiner=refiner)
    assert isinstance(pred.runner, OpenVinoRunner) and isinstance(pred.refine_runner, FrozenFp32Runner)


@pytest.mark.data
@pytest.mark.parametrize("path", ["frozen", "onnx"])
def test_fp32_fast_path_masks_match_exact_fp32_on_the_test_part(path: str) -> None:
    """The issue's bar for any CPU path: Dice >= 0.99 mean and no image below 0.95 against exact fp32."""
    if not (WEIGHTS / "model.safetensors").is_file():
        pytest.skip("no shipped weights in weights/")
    if not (DATA / "images").is_dir():
        pytest.skip(f"ISIC images not found at {DATA}")
    ids = TEST_IDS.read_text().split()[:24]
    images = [load_image(DATA / "images" / f"{i}.jpg") for i in ids]
    model = load_model(WEIGHTS)
    if path == "onnx" and not onnx_runtime_available():
        pytest.skip("onnx / onnxruntime not installed")
    exact, fast = Predictor(model, fast=False), Predictor(model, fast=False)
    runner = FrozenFp32Runner if path == "frozen" else OnnxFp32Runner
    fast.runner = runner(model, model.inference_img_size)
    dice = [image_metrics(a.mask, b.mask)["dice"] for a, b in zip(fast.predict_batch(images),
                                                                   exact.predict_batch(images))]
    assert np.mean(dice) >= 0.99 and min(dice) >= 0.95


def test_warm_up_builds_the_trace_before_the_first_photo_and_the_app_does_it_at_start() -> None:
    from lesionseg.ui.launch import LaunchConfig, load_predictor_or_exit

    pred = Predictor(DSAttentionUNet(**SMALL).eval())
    if not pred.fast:
        pytest.skip("no CPU fast path here (eager fp32 has no trace to build)")
    assert not pred.runner.ready
    pred.warm_up()
    assert pred.calls == 0 and pred.runner.ready
    if not (WEIGHTS / "model.safetensors").is_file():
        pytest.skip("no shipped weights in weights/")
    app = load_predictor_or_exit(LaunchConfig(weights=str(WEIGHTS), device="cpu"))
    assert app.calls == 0 and app.runner.ready


def _cpuid_masking_available() -> str | None:
    """Why scripts/as_avx2.sh cannot run here, or None where it can."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "no /proc/cpuinfo"
    if " cpuid_fault" not in flags:
        return "no CPUID faulting on this CPU / kernel (cpuid_fault)"
    if not any(Path(d, "cc").exists() for d in os.environ.get("PATH", "").split(os.pathsep)):
        return "no C compiler (cc) to build the CPUID shim"
    return None


def test_as_avx2_masks_cpuid_for_every_library_and_the_onnx_path_is_chosen() -> None:
    """scripts/as_avx2.sh: the child sees an AVX2-only CPU through CPUID itself (torch's own ISA,
    the chip checks, ONNX Runtime), without the caps, and takes the AVX2 fast path (the one without
    OpenVINO here: OpenVINO is the same runner on both classes)."""
    why = _cpuid_masking_available()
    if why:
        pytest.skip(why)
    full = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA",
                                                               "DNNL_MAX_CPU_ISA")} | NO_OPENVINO
    child = CHILD + """
import faulthandler
print(json.dumps({"avx512": bool(torch.cpu._is_avx512_supported()), "faulthandler": faulthandler.is_enabled()}))
"""
    out = subprocess.run([str(ROOT / "scripts" / "as_avx2.sh"), sys.executable, "-X", "faulthandler", "-c", child],
                         env=full, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    got, chip = json.loads(lines[-2]), json.loads(lines[-1])
    assert got["torch"] == "AVX2" and not got["bf16"] and not got["int8"] and not chip["avx512"]
    assert got["runner"] == AVX2_RUNNER and chip["faulthandler"]
    # a real crash still reaches the program's own SIGSEGV handler (here Python's faulthandler)
    crash = subprocess.run([str(ROOT / "scripts" / "as_avx2.sh"), sys.executable, "-X", "faulthandler", "-c",
                            "import ctypes; ctypes.string_at(0)"], env=full, capture_output=True, text=True,
                           timeout=60)
    assert crash.returncode != 0 and "Segmentation fault" in crash.stderr
