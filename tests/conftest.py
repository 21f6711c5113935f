"""Shared test setup: quiet, offline environment and fixtures for data, tiny models and images.

The environment variables are set at import, before any test module imports albumentations
(update check), gradio (analytics) or huggingface_hub (network).
"""
from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import shutil  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # tests also run without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

# The real data lives outside the repository and is never copied into it.
REAL_DATA_DIR = Path(os.environ.get("LESIONSEG_TEST_DATA", REPO_ROOT.parent / "shared" / "data" / "isic2017_train_256"))

# A small DS-AttentionUNet for fast tests (default config: ~1.8 M parameters).
TINY_MODEL_KWARGS = {
    "encoder_channels": [8, 16, 32, 64],
    "decoder_channels": [32, 16, 8],
    "norm_groups": 4,
    "inference_img_size": 64,
}

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests using the real data get the ``data`` marker, so ``-m "not data"`` deselects them. The
    OpenVINO path's tests run last (with ``--dist loadfile``, last in their worker): an ordering
    kept from when a process that had run them could go down later (cpu/openvino.py::shared_core)."""
    for item in items:
        if "real_data_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.data)
    items.sort(key=lambda item: item.nodeid.startswith("tests/test_openvino_path.py"))  # stable: the rest keep order


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The ISIC 2017 training data at 256 px (images/, masks/, ids.txt); skips when absent."""
    if not (REAL_DATA_DIR / "images").is_dir() or not (REAL_DATA_DIR / "masks").is_dir():
        pytest.skip(f"real data not found at {REAL_DATA_DIR} (set LESIONSEG_TEST_DATA to its folder)")
    return REAL_DATA_DIR


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Path of a system chromium for Playwright; skips when none is installed."""
    if CHROMIUM is None:
        pytest.skip("chromium not installed (scripts/bootstrap.sh --with-chromium installs it)")
    return CHROMIUM


@pytest.fixture
def tiny_model_kwargs() -> dict:
    return {k: (list(v) if isinstance(v, list) else v) for k, v in TINY_MODEL_KWARGS.items()}


@pytest.fixture
def tiny_model():
    """A freshly initialised tiny DS-AttentionUNet in eval mode (seeded, so tests are repeatable)."""
    import torch

    from lesionseg.models import DSAttentionUNet

    torch.manual_seed(0)
    return DSAttentionUNet(**TINY_MODEL_KWARGS).eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny model folder (config.json + model.safetensors), shared by the session: do not modify."""
    import torch

    from lesionseg.models import DSAttentionUNet

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_model")
    DSAttentionUNet(**TINY_MODEL_KWARGS).save_pretrained(folder)
    return folder


def draw_lesion(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic dermoscopy-like RGB image (skin tone + dark ellipse) and its {0, 255} mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    cy, cx = rng.uniform(0.35, 0.65) * height, rng.uniform(0.35, 0.65) * width
    ry, rx = rng.uniform(0.15, 0.3) * height, rng.uniform(0.15, 0.3) * width
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    img = np.empty((height, width, 3), np.float64)
    img[:] = (220, 170, 150)
    img[inside] = (110, 60, 40)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), inside.astype(np.uint8) * 255


@pytest.fixture
def make_dataset(tmp_path: Path):
    """Factory: ``make_dataset(n, size=(h, w), mask_suffix="_segmentation")`` writes ISIC-style
    ``images/ISIC_000000i.jpg`` + ``masks/ISIC_000000i<suffix>.png`` under tmp_path; returns the root."""
    from PIL import Image

    def make(n: int = 4, size: tuple[int, int] = (48, 64), mask_suffix: str = "_segmentation",
             root: Path | None = None) -> Path:
        root = root or tmp_path / "data"
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img, mask = draw_lesion(*size, seed=i)
            ident = f"ISIC_{i:07d}"
            Image.fromarray(img).save(root / "images" / f"{ident}.jpg", quality=95)
            Image.fromarray(mask).save(root / "masks" / f"{ident}{mask_suffix}.png")
        return root

    return make


@pytest.fixture
def offline_hub_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``put(folder, names) -> repo id``: copy ``names`` of ``folder`` into a Hub cache snapshot of
    ``someone/lesion-model`` under tmp_path, with the Hub offline and that cache in use (the network
    boundary: everything from the cache on is real)."""
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--lesion-model"
    snap = repo / "snapshots" / commit
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    def put(folder: Path, names: tuple[str, ...]) -> str:
        snap.mkdir(parents=True, exist_ok=True)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
        for name in names:
            shutil.copy(Path(folder) / name, snap / name)
        return "someone/lesion-model"

    put.snapshot = snap
    return put


@pytest.fixture(scope="session")
def refiner_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights folder with a click refiner: the shipped ``weights/`` where it has ``refiner/``,
    else a copy of it plus a refiner made from the model (zero-initialised click channels, so it
    outputs exactly the model's probabilities: enough to test the plumbing, not the correction)."""
    shipped = REPO_ROOT / "weights"
    if (shipped / "refiner" / "config.json").is_file():
        return shipped
    from lesionseg.inference.weights import load_model
    from lesionseg.models.refiner import click_refiner_from

    folder = tmp_path_factory.mktemp("weights_with_refiner")
    for name in ("config.json", "model.safetensors", "README.md"):
        if (shipped / name).is_file():
            shutil.copy2(shipped / name, folder / name)
    model = load_model(folder)
    click_refiner_from(model, dict(model._hub_mixin_config)).save_pretrained(folder / "refiner")
    return folder


@pytest.fixture(scope="session")
def app_server(refiner_weights: Path, tmp_path_factory: pytest.TempPathFactory):
    """One ``python app.py`` shared by the app test modules that need no flags of their own: the
    shipped weights with a click refiner (see :func:`refiner_weights`), ``--threads 1`` and
    "Save correction" on (``.corrections`` is its folder). Starting a server costs seconds of the
    suite's budget per module; each browser / client session has its own state in it."""
    from app_server import AppServer

    corrections = tmp_path_factory.mktemp("saved_corrections")
    with AppServer("--threads", "1", "--weights", str(refiner_weights), "--corrections-dir", str(corrections)) as s:
        s.corrections = corrections
        yield s


@pytest.fixture(scope="session")
def tiny_app_server(tiny_model_dir: Path):
    """One ``python app.py --weights <tiny model>`` shared by the security and bad-input modules,
    which test the server's doors, not the model."""
    from app_server import AppServer

    with AppServer("--threads", "1", "--weights", str(tiny_model_dir)) as s:
        yield s
