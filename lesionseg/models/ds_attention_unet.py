"""DS-AttentionUNet: a U-Net with attention-gated skips, deep supervision and GroupNorm.

The model composes an encoder, a decoder and segmentation heads. Constructor arguments are
JSON-friendly and prefixed by component so that ``PyTorchModelHubMixin`` turns them into
``config.json``; the ``inference_*`` / ``preprocess_*`` arguments carry no weights but travel
with them, so every command uses the input size, normalisation and threshold the model was
trained and tuned with.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from .blocks import AttentionGate, ConvBlock
from .efficientnet_lite import EfficientNetLite0Encoder
from .encoders import ENCODERS, MobileNetV2Encoder, UNetEncoder

# encoders with an ImageNet file, by encoder_name; every other name in ENCODERS is trained from scratch
PRETRAINED_ENCODERS = {"mobilenet_v2": MobileNetV2Encoder, "efficientnet_lite0": EfficientNetLite0Encoder}

ARCHITECTURE = "DSAttentionUNet"
DEFAULT_UNET_CHANNELS = (16, 32, 64, 128, 256)
MOBILENET_DECODER_CHANNELS = (128, 64, 32, 24, 16)
# a click-conditioned model's extra inputs: previous probability, positive clicks, negative clicks
CLICK_CHANNELS = 3


class BilinearUpsample(nn.Module):
    """Bilinear resize (``align_corners=False``). Shapes: (B, C, h, w), size (H, W) -> (B, C, H, W).

    A module so that a backend can swap in its own kernel (the CPU bf16 path does); no weights.
    """

    def forward(self, x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class DecoderStage(nn.Module):
    """Upsample the coarser feature, gate the skip with it, concatenate, conv block.

    Shapes: coarse (B, C_c, h, w), skip (B, C_s, 2h, 2w) -> (B, C_out, 2h, 2w).
    """

    def __init__(self, coarse_ch: int, skip_ch: int, out_ch: int, norm_groups: int, activation: str,
                 attention: bool):
        super().__init__()
        self.reduce = nn.Conv2d(coarse_ch, out_ch, 1, bias=False)
        self.upsample = BilinearUpsample()
        self.gate = AttentionGate(skip_ch, out_ch, max(skip_ch // 2, 1), norm_groups) if attention else None
        self.block = ConvBlock(skip_ch + out_ch, out_ch, norm_groups, activation)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        # the 1x1 reduction (no bias) and bilinear upsampling are both linear, so they commute: reducing
        # first gives the same result with 4x fewer multiply-adds and half the channels to upsample
        up = self.upsample(self.reduce(coarse), skip.shape[-2:])
        if self.gate is not None:
            skip, _ = self.gate(skip, up)
        return self.block(torch.cat([skip, up], dim=1))


class Decoder(nn.Module):
    """Decoder stages from the deepest encoder feature up to full resolution.

    Returns every stage's output (coarse to fine) so that deep-supervision heads can read them.
    """

    def __init__(self, encoder_channels: Sequence[int], decoder_channels: Sequence[int], norm_groups: int,
                 activation: str, attention: bool):
        super().__init__()
        if len(decoder_channels) != len(encoder_channels) - 1:
            raise ValueError(f"decoder_channels needs {len(encoder_channels) - 1} entries (one per skip), "
                             f"got {len(decoder_channels)}")
        skips = list(encoder_channels[:-1])[::-1]
        stages, prev = [], encoder_channels[-1]
        for skip_ch, out_ch in zip(skips, decoder_channels):
            stages.append(DecoderStage(prev, skip_ch, out_ch, norm_groups, activation, attention))
            prev = out_ch
        self.stages = nn.ModuleList(stages)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        x, outs = feats[-1], []
        for stage, skip in zip(self.stages, feats[-2::-1]):
            x = stage(x, skip)
            outs.append(x)
        return outs



def check_wide_view(factor: float) -> float:
    """``inference_wide_view`` as a float: 0 (off) or a zoom-out factor in (1, 4]; ValueError otherwise."""
    f = float(factor)
    if not (f == 0.0 or 1.0 < f <= 4.0):
        raise ValueError(f"inference_wide_view: the wide view's zoom-out factor must be 0 (off) or in (1, 4], "
                         f"got {factor}")
    return f

class DSAttentionUNet(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="lesionseg",
    pipeline_tag="image-segmentation",
    license="apache-2.0",
    tags=["medical-imaging", "dermoscopy", "skin-lesion-segmentation", "attention-unet", "isic"],
    repo_url="https://github.com/lesionseg/lesionseg",
):
    """DS-AttentionUNet for binary lesion segmentation.

    Args:
        in_channels: input image channels (3 for RGB).
        out_channels: output logit channels (1: lesion vs skin).
        encoder_name: ``unet`` (conv blocks trained from scratch), ``mobilenet_v2`` (MobileNetV2
            features under a full-resolution stem; ImageNet-initialised in training, see
            :func:`load_encoder_weights`) or ``efficientnet_lite0`` (the same with
            EfficientNet-Lite0). Folders saved before this option load as ``unet``.
        encoder_channels: channels of each encoder level, shallow to deep (4-6 levels); None: the
            encoder's default. For a pretrained encoder only the first (the stem) may differ from
            ``[16, 16, 24, 32, 96, 320]`` (``mobilenet_v2``) or ``[16, 16, 24, 40, 112, 320]``.
        decoder_channels: channels of each decoder stage, deep to shallow (one per skip); None:
            the skips' channels for ``unet``, ``[128, 64, 32, 24, 16]`` for a pretrained encoder.
        norm_groups: GroupNorm groups (reduced per layer to divide its channels).
        activation: one of ``relu``, ``silu``, ``gelu``, ``leaky_relu``.
        encoder_dropout: Dropout2d in the two deepest encoder blocks.
        decoder_attention: attention gates on the skip connections.
        deep_supervision: auxiliary 1x1 heads on every decoder stage but the last.
        full_resolution_stage: False leaves out the full-resolution stem and decoder stage
            (pretrained encoders only): the finest decoder stage works at 1/2 and its logits are
            upsampled bilinearly; ``encoder_channels`` then has no stem entry.
        inference_img_size: square side the model was trained at; images are resized to it.
        inference_threshold: default probability threshold (tuned for recall on validation data).
        inference_operating_points: list of ``{"threshold", "recall", "precision"}`` on validation.
        inference_fill_holes, inference_min_region_fraction: mask clean-up applied by the Predictor
            (fill enclosed holes; drop regions smaller than this fraction of the largest region).
        inference_wide_view: zoom-out factor of the Predictor's second, wide view of photos whose
            outline touches the border (lesionseg/inference/wide_view.py); 0 (the default, and
            folders saved before it existed): the plain view only.
        preprocess_mean, preprocess_std: per-channel normalisation of [0, 1] RGB input.
        click_conditioned: the click refiner: input channels are the normalised RGB, the previous
            probability map and disks of ``click_radius`` pixels (at ``inference_img_size``) at the
            positive and the negative clicks (see :mod:`lesionseg.clicks`); ``in_channels`` is 6.

    ``forward`` shapes: (B, C_in, H, W) -> logits (B, out_channels, H, W) in eval mode, any H, W
    (padded to a multiple of the total stride and cropped back). In training mode with deep
    supervision it returns a tuple ``(final, aux_1, ..., aux_k)``, all upsampled to (H, W),
    finest auxiliary head first.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        encoder_name: str = "unet",
        encoder_channels: Sequence[int] | None = None,
        decoder_channels: Sequence[int] | None = None,
        norm_groups: int = 8,
        activation: str = "relu",
        encoder_dropout: float = 0.1,
        decoder_attention: bool = True,
        deep_supervision: bool = True,
        inference_img_size: int = 256,
        inference_threshold: float = 0.5,
        inference_operating_points: list[dict[str, float]] | None = None,
        inference_fill_holes: bool = True,
        inference_min_region_fraction: float = 0.1,
        inference_wide_view: float = 0.0,
        preprocess_mean: Sequence[float] = (0.485, 0.456, 0.406),
        preprocess_std: Sequence[float] = (0.229, 0.224, 0.225),
        click_conditioned: bool = False,
        click_radius: int = 5,
        full_resolution_stage: bool = True,
    ):
        super().__init__()
        if click_conditioned and in_channels != 3 + CLICK_CHANNELS:
            raise ValueError(f"a click-conditioned model takes RGB + previous mask + positive / negative clicks "
                             f"(in_channels {3 + CLICK_CHANNELS}), got in_channels {in_channels}")
        if click_radius < 1:
            raise ValueError(f"click_radius must be >= 1 pixel, got {click_radius}")
        if encoder_name not in ENCODERS:
            raise ValueError(f"unknown encoder_name {encoder_name!r}; valid: {', '.join(ENCODERS)}")
        if not full_resolution_stage and encoder_name == "unet":
            raise ValueError(f"full_resolution_stage=False needs a pretrained encoder (encoder_name "
                             f"{' or '.join(PRETRAINED_ENCODERS)}): the unet encoder's first level is its "
                             "full-resolution stage")
        if encoder_name == "unet":
            encoder_channels = list(encoder_channels or DEFAULT_UNET_CHANNELS)
            if not 4 <= len(encoder_channels) <= 6:
                raise ValueError(f"encoder_channels needs 4 to 6 levels, got {len(encoder_channels)}")
            encoder: nn.Module = UNetEncoder(in_channels, encoder_channels, norm_groups, activation, encoder_dropout)
        else:
            stem = 0 if not full_resolution_stage else int(encoder_channels[0]) if encoder_channels else 16
            encoder = PRETRAINED_ENCODERS[encoder_name](stem, norm_groups, activation, in_channels)
            if encoder_channels and list(encoder_channels) != encoder.out_channels:
                what = "(the first, the stem, may change)" if stem else "(no stem: full_resolution_stage is false)"
                raise ValueError(f"encoder_channels of {encoder_name!r} are {encoder.out_channels} "
                                 f"{what}, got {list(encoder_channels)}")
            encoder_channels = encoder.out_channels
        if decoder_channels is None:
            decoder_channels = (list(encoder_channels[:-1])[::-1] if encoder_name == "unet"
                                else list(MOBILENET_DECODER_CHANNELS)[:len(encoder_channels) - 1])
        self.encoder_name = encoder_name
        if isinstance(self._hub_mixin_config, dict):
            # config.json names the channels the model has, not the None that asked for the defaults
            self._hub_mixin_config.update(encoder_channels=list(encoder_channels),
                                          decoder_channels=list(decoder_channels))
        if not 0.0 < inference_threshold < 1.0:
            raise ValueError(f"inference_threshold must lie in (0, 1), got {inference_threshold}")
        if not 0.0 <= inference_min_region_fraction <= 1.0:
            raise ValueError(f"inference_min_region_fraction must lie in [0, 1], got {inference_min_region_fraction}")
        check_wide_view(inference_wide_view)
        self.encoder_channels = list(encoder_channels)
        self.decoder_channels = list(decoder_channels)
        self.deep_supervision = deep_supervision
        self.inference_img_size = int(inference_img_size)
        self.inference_threshold = float(inference_threshold)
        self.inference_operating_points = list(inference_operating_points or [])
        self.inference_fill_holes = bool(inference_fill_holes)
        self.inference_min_region_fraction = float(inference_min_region_fraction)
        self.inference_wide_view = float(inference_wide_view)
        self.preprocess_mean = [float(v) for v in preprocess_mean]
        self.preprocess_std = [float(v) for v in preprocess_std]
        self.full_resolution_stage = bool(full_resolution_stage)
        self.stride = 2 ** (len(encoder_channels) - 1 + encoder.first_level)
        self.in_channels = int(in_channels)
        self.click_conditioned = bool(click_conditioned)
        self.click_radius = int(click_radius)

        self.encoder = encoder
        self.decoder = Decoder(encoder_channels, decoder_channels, norm_groups, activation, decoder_attention)
        self.head = nn.Conv2d(decoder_channels[-1], out_channels, 1)
        # logits of a decoder that stops at 1/2 are brought to the input's size (a module, as above)
        self.upsample_logits = BilinearUpsample() if encoder.first_level else None
        self.aux_heads = nn.ModuleList(
            [nn.Conv2d(ch, out_channels, 1) for ch in decoder_channels[:-1]] if deep_supervision else []
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % self.stride, (-w) % self.stride
        if pad_h or pad_w:
            # reflect keeps the border statistics skin-like; replicate covers inputs too small to reflect
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        stages = self.decoder(self.encoder(x))
        logits = self.head(stages[-1])
        if self.upsample_logits is not None:
            logits = self.upsample_logits(logits, x.shape[-2:])
        logits = logits[..., :h, :w]
        if not (self.training and self.deep_supervision):
            return logits
        size = x.shape[-2:]
        aux = [
            F.interpolate(head(s), size=size, mode="bilinear", align_corners=False)[..., :h, :w]
            for head, s in zip(self.aux_heads, stages[:-1])
        ]
        return (logits, *aux[::-1])

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, strict: bool = True,
                        **kwargs: Any) -> "DSAttentionUNet":
        """Load from a local folder or Hub repo id; strict by default (a shape mismatch fails)."""
        return super().from_pretrained(pretrained_model_name_or_path, *args, strict=strict, **kwargs)

    def load_encoder_weights(self, path: str | Path) -> None:
        """Initialise a pretrained encoder from its ImageNet file (training only; the saved model
        carries the fine-tuned weights). ValueError for an encoder trained from scratch."""
        if not hasattr(self.encoder, "load_imagenet"):
            raise ValueError(f"encoder {self.encoder_name!r} has no ImageNet weights; "
                             f"pretrained encoders: {', '.join(n for n in ENCODERS if n != 'unet')}")
        self.encoder.load_imagenet(path)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @classmethod
    def _load_as_pickle(cls, model: Any, model_file: str, map_location: str, strict: bool) -> Any:
        # A Hub repo without model.safetensors would otherwise be unpickled: refuse instead.
        raise ValueError(f"{model_file}: refusing to unpickle a .bin/.pth checkpoint from the Hub; "
                         "publish the weights as model.safetensors (lesionseg train --push-to-hub does)")
