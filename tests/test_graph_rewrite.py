"""The OpenVINO path's rewrite of the logits' bilinear upsample into two MatMuls: the matrices are
PyTorch's bilinear resampling, the graph loses the Resize only where the model has one, and the
runner still computes the eager model."""
from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lesionseg.inference.cpu.openvino import openvino_available  # noqa: E402
from lesionseg.inference.cpu.rewrite import bilinear_matrix, logits_upsample_as_matmul  # noqa: E402
from lesionseg.inference.onnx_backend import export_onnx  # noqa: E402
from lesionseg.models import DSAttentionUNet  # noqa: E402
from runner_check import assert_computes_the_eager_model  # noqa: E402
from test_no_full_resolution import half_model  # noqa: E402

onnx = pytest.importorskip("onnx")


@pytest.mark.parametrize("size_in,size_out", [((32, 32), (64, 64)), ((5, 7), (13, 9)), ((1, 4), (3, 8)),
                                              ((9, 9), (4, 4))])
def test_the_two_matrices_are_pytorch_bilinear_resampling(size_in: tuple[int, int],
                                                          size_out: tuple[int, int]) -> None:
    x = torch.randn(2, 3, *size_in)
    rows = torch.from_numpy(bilinear_matrix(size_in[0], size_out[0]))
    cols = torch.from_numpy(bilinear_matrix(size_in[1], size_out[1]))
    expected = F.interpolate(x, size=size_out, mode="bilinear", align_corners=False)
    torch.testing.assert_close(rows @ x @ cols.T, expected, atol=1e-5, rtol=1e-5)
    assert np.allclose(bilinear_matrix(*size_in[:1], size_out[0]).sum(axis=1), 1.0)  # weights sum to one
    with pytest.raises(ValueError, match="positive"):
        bilinear_matrix(0, 4)


def _ops(data: bytes) -> list[str]:
    return [n.op_type for n in onnx.load_from_string(data).graph.node]


def test_only_the_logits_resize_becomes_two_matmuls() -> None:
    model = half_model()
    data = export_onnx(model)
    out = logits_upsample_as_matmul(data, (32, 32), (64, 64))
    before, after = _ops(data), _ops(out)
    assert after.count("Resize") == before.count("Resize") - 1 >= 1  # the decoder's own upsamples stay
    assert after.count("MatMul") == before.count("MatMul") + 2
    onnx.checker.check_model(onnx.load_from_string(out))
    # a model whose decoder ends at full resolution has no logits upsample: the graph is untouched
    torch.manual_seed(0)
    full = DSAttentionUNet(encoder_channels=[8, 16, 32, 64], decoder_channels=[32, 16, 8], inference_img_size=64)
    full_graph = export_onnx(full.eval())
    assert logits_upsample_as_matmul(full_graph, (32, 32), (64, 64)) == full_graph


@pytest.mark.skipif(not openvino_available(), reason="openvino not installed (requirements.txt)")
def test_the_openvino_runner_of_a_half_resolution_decoder_computes_the_eager_model(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from lesionseg.inference.cpu import OpenVinoRunner

    monkeypatch.delenv("LESIONSEG_OPENVINO", raising=False)
    model = half_model()
    runner = OpenVinoRunner(model, 64)
    assert_computes_the_eager_model(runner, model)
    # a graph OpenVINO could not compile would fall back to ONNX Runtime on the original graph
    assert runner._fallback is None and runner.name.startswith("openvino")
    exported, compiled = _ops(export_onnx(model)), _ops(runner._graph)
    assert compiled.count("Resize") == exported.count("Resize") - 1
    assert compiled.count("MatMul") == exported.count("MatMul") + 2


@pytest.mark.skipif(not openvino_available(), reason="openvino not installed (requirements.txt)")
def test_a_size_the_model_pads_keeps_the_resize(monkeypatch: pytest.MonkeyPatch) -> None:
    from lesionseg.inference.cpu import OpenVinoRunner

    monkeypatch.delenv("LESIONSEG_OPENVINO", raising=False)
    model = half_model()
    model.inference_img_size = 48  # padded to 64 (stride 32) inside the graph, cropped back after the Resize
    runner = OpenVinoRunner(model, 48)
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(runner(x), model(x), atol=2e-4, rtol=1e-4)
    assert runner._fallback is None and runner.name.startswith("openvino")
    assert _ops(runner._graph).count("Resize") == _ops(export_onnx(model)).count("Resize")
