"""Training configuration: defaults < YAML file (--config) < command-line flags."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..data.presets import AUGMENT_PRESETS, ZOOM_P
from ..losses import LOSSES

# the score that picks the best epoch: validation Dice, or its mean with the external set's Dice
SELECT_ON = ("val", "val+external")


@dataclass
class TrainConfig:
    # data
    images: str | None = None
    masks: str | None = None
    # one folder, or several trained on together (a YAML list, or --data-dir A B)
    data_dir: str | list[str] | None = None
    mask_suffix: str = "_segmentation"
    split_file: str | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    debug: bool = False
    limit: int | None = None
    # output
    output_dir: str = "outputs"
    run_name: str | None = None
    # optimisation
    img_size: int = 256
    batch_size: int = 8
    epochs: int = 50
    lr: float = 2e-3
    weight_decay: float = 1e-4
    loss: str = "bce_dice"
    deep_supervision_decay: float = 0.5
    grad_clip: float = 1.0
    augment: bool = True
    augment_preset: str = "standard"
    # how often the zoom preset places its window on the lesion (a fraction of the photos)
    zoom_p: float = ZOOM_P
    # the pretrained encoder's learning rate as a fraction of lr (1: one rate for the whole model)
    encoder_lr_scale: float = 1.0
    # an exponential moving average of the weights is validated, chosen and saved (0: off)
    ema_decay: float = 0.0
    # None: ImageNet weights for a pretrained encoder (model.encoder_name), from the installed
    # extra; "none": random initialisation; else the path of the ImageNet file
    encoder_weights: str | None = None
    # runtime
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    workers: int = 0
    seed: int = 42
    resume: str | None = None
    max_steps_per_epoch: int | None = None
    sample_images: int = 4
    # after training
    recall_target: float = 0.93
    # a labelled folder from outside the training data, scored every epoch and never trained on
    external_dir: str | None = None
    select_on: str = "val"
    external_recall_target: float = 0.9
    push_to_hub: str | None = None
    # the click refiner: trained from this segmentation model's weights (folder or Hub id) instead
    # of a segmentation model, with up to max_clicks simulated clicks per image
    refiner_from: str | None = None
    max_clicks: int = 3
    click_radius: int = 5
    # extra BCE weight on the pixels around the newest simulated click (see training/refine.py)
    click_loss_weight: float = 1.0
    # fine-tuning: start from these weights (folder or Hub id; their config.json sets the model),
    # data_dir then holds the new data (clinicians' corrections), mixed with the original data in
    # mix_data ("none": the new data alone), which is split as the original run was; the new
    # data is repeated to make up about corrections_share of each epoch (see training/finetune.py)
    finetune: str | None = None
    mix_data: str | list[str] | None = None
    corrections_share: float = 0.2
    # model constructor arguments (DSAttentionUNet), JSON-friendly
    model: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.data_dir, (list, tuple)):
            self.set_data_dirs(self.data_dir)

    def set_data_dirs(self, dirs: list[str] | tuple[str, ...]) -> None:
        """Set the training folders; one folder is kept as a string, so that the saved config.yaml
        of a one-folder run reads as it always did."""
        dirs = [str(d) for d in dirs]
        self.data_dir = dirs[0] if len(dirs) == 1 else (dirs or None)

    @property
    def data_dirs(self) -> list[str]:
        """The training data folders (empty when --images / --masks are used)."""
        if not self.data_dir:
            return []
        return [self.data_dir] if isinstance(self.data_dir, str) else list(self.data_dir)

    @property
    def mix_dirs(self) -> list[str]:
        """Fine-tuning: the original data folders mixed with the new data (empty for none)."""
        dirs = [self.mix_data] if isinstance(self.mix_data, str) else list(self.mix_data or [])
        return [] if [d.lower() for d in dirs] == ["none"] else dirs

    def validate(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; valid: {', '.join(LOSSES)}")
        if self.device not in ("auto", "cpu", "cuda", "mps") and not self.device.startswith("cuda:"):
            raise ValueError(f"unknown device {self.device!r}; valid: auto, cpu, cuda, mps")
        for name in ("batch_size", "epochs", "img_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.img_size % 16:
            raise ValueError(f"--img_size must be a multiple of 16, got {self.img_size}")
        if self.augment_preset not in AUGMENT_PRESETS:
            raise ValueError(f"unknown augment_preset {self.augment_preset!r}; valid: {', '.join(AUGMENT_PRESETS)}")
        if not 0 < self.zoom_p <= 1:
            raise ValueError(f"--zoom-p must lie in (0, 1], got {self.zoom_p}")
        if self.zoom_p != ZOOM_P and self.augment_preset != "zoom":
            raise ValueError(f"--zoom-p applies to --augment-preset zoom only, got --augment-preset {self.augment_preset}")
        if self.select_on not in SELECT_ON:
            raise ValueError(f"unknown select_on {self.select_on!r}; valid: {', '.join(SELECT_ON)}")
        if self.select_on != "val" and not self.external_dir:
            raise ValueError(f"--select-on {self.select_on} needs --external-dir DIR")
        if not 0 < self.external_recall_target <= 1:
            raise ValueError(f"--external-recall-target must lie in (0, 1], got {self.external_recall_target}")
        if self.max_clicks < 1 or self.click_radius < 1:
            raise ValueError(f"--max-clicks and --click-radius must be >= 1, got {self.max_clicks}, {self.click_radius}")
        if self.mix_data is not None and not self.finetune:
            raise ValueError("--mix-data applies to fine-tuning only: add --finetune WEIGHTS")
        if self.finetune and self.refiner_from:
            raise ValueError("--finetune and --refiner-from cannot be combined: fine-tune the model first, then "
                             "train its refiner")
        if not 0 < self.corrections_share < 1:
            raise ValueError(f"--corrections-share must lie in (0, 1), got {self.corrections_share}")
        if not 0 < self.encoder_lr_scale <= 1:
            raise ValueError(f"--encoder-lr-scale must lie in (0, 1], got {self.encoder_lr_scale}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"--ema-decay must lie in [0, 1) (0 turns it off), got {self.ema_decay}")
        if not 0 < self.recall_target <= 1:
            raise ValueError(f"--recall-target must lie in (0, 1], got {self.recall_target}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


CONFIG_KEYS = {f.name for f in fields(TrainConfig)}


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config; unknown keys fail with the list of valid ones."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{p}: cannot read config ({e})".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ValueError(f"{p}: config must be a YAML mapping of option: value")
    data = {k.replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - CONFIG_KEYS)
    if unknown:
        raise ValueError(f"{p}: unknown config keys {unknown}; valid: {sorted(CONFIG_KEYS)}")
    return data


def build_config(file_values: dict[str, Any], overrides: dict[str, Any]) -> TrainConfig:
    """Merge defaults, file values and explicit flag values (None means 'not given').

    ``--model`` JSON is merged key by key over the file's ``model:``, so one flag can change one
    constructor argument of a recipe (its decoder width, say) without dropping the encoder it names.
    """
    values = dict(file_values)
    values.update({k: v for k, v in overrides.items() if v is not None and k in CONFIG_KEYS})
    if isinstance(file_values.get("model"), dict) and isinstance(overrides.get("model"), dict):
        values["model"] = {**file_values["model"], **overrides["model"]}
    cfg = TrainConfig(**values)
    cfg.validate()
    return cfg

