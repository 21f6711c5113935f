"""scripts/lever_effects.py: paired lever effects with a two-level (seeds, photos) bootstrap interval,
and the committed tables in docs/generalization.md rendered from the committed run records."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import lever_effects  # noqa: E402
from lever_effects import BEGIN, END, effect, framing_means, load_scores, render, seed_effect  # noqa: E402


def _photos(n: int = 150, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.6, 1.0, size=n)


def test_a_constant_gain_on_every_photo_is_found_with_a_tight_interval() -> None:
    base = np.stack([_photos(), _photos() + 0.01])
    point, lo, hi = effect(base + 0.05, base, np.random.default_rng(0), replicates=2000)
    assert point == pytest.approx(0.05)
    # the seeds differ by 0.01 on every photo, so a replicate can differ from the point by that much, no more
    assert 0.04 - 1e-9 <= lo <= point <= hi <= 0.06 + 1e-9 and hi - lo > 0.005


def test_no_difference_gives_an_interval_around_zero() -> None:
    base = np.stack([_photos(seed=2), _photos(seed=3)])
    point, lo, hi = effect(base.copy(), base, np.random.default_rng(0), replicates=2000)
    assert point == pytest.approx(0.0) and lo < 0 < hi


def test_the_seed_spread_widens_the_interval() -> None:
    """Two seeds a side that differ by 0.04 on every photo: a 0.01 effect is not separable from that,
    while the same 0.01 with seeds that agree is."""
    photos = _photos(seed=4)
    noisy = np.stack([photos - 0.02, photos + 0.02])
    _, lo, hi = effect(noisy + 0.01, noisy, np.random.default_rng(0), replicates=2000)
    assert lo < 0 < hi
    calm = np.stack([photos, photos])
    _, lo, hi = effect(calm + 0.01, calm, np.random.default_rng(0), replicates=2000)
    assert lo > 0


def test_paired_seeds_cancel_the_spread_the_two_sides_share() -> None:
    """A lever run from each seed's own trajectory (the weight average of the same run): the seeds
    differ by 0.04 on every photo, the lever adds 0.01 to each, so paired it separates; unpaired it
    does not; and pairing needs one run a side per seed."""
    photos = _photos(seed=5)
    noisy = np.stack([photos - 0.02, photos + 0.02])
    point, lo, hi = effect(noisy + 0.01, noisy, np.random.default_rng(0), replicates=2000, paired_seeds=True)
    assert point == pytest.approx(0.01) and lo > 0
    _, lo, hi = effect(noisy + 0.01, noisy, np.random.default_rng(0), replicates=2000)
    assert lo < 0 < hi
    with pytest.raises(ValueError, match="as many runs a side"):
        effect(noisy[:1], noisy, np.random.default_rng(0), paired_seeds=True)


def _record(folder: Path, run: str, seed: int, dice: dict[str, float]) -> None:
    (folder / run).mkdir(parents=True)
    per_image = [{"id": i, "dice": d, "recall": min(1.0, d + 0.05)} for i, d in dice.items()]
    for name in ("eval_test.json", "eval_external.json"):
        (folder / run / name).write_text(json.dumps({"per_image": per_image[::-1] if seed % 2 else per_image}))
    (folder / run / "run_info.json").write_text(json.dumps({"seed": seed}))


def test_scores_are_aligned_by_photo_id_and_mismatches_are_named(tmp_path: Path) -> None:
    _record(tmp_path, "a_seed42", 42, {"ISIC_1": 0.9, "ISIC_2": 0.8})
    _record(tmp_path, "a_seed43", 43, {"ISIC_1": 0.7, "ISIC_2": 0.6})  # stored in the other order
    scores = load_scores(["a_seed42", "a_seed43"], "eval_test.json", tmp_path)
    assert scores.ids == ["ISIC_1", "ISIC_2"]
    np.testing.assert_allclose(scores.dice, [[0.9, 0.8], [0.7, 0.6]])
    _record(tmp_path, "b_seed42", 42, {"ISIC_1": 0.9, "ISIC_3": 0.8})
    with pytest.raises(SystemExit, match="b_seed42.*other photos"):
        load_scores(["a_seed42", "b_seed42"], "eval_test.json", tmp_path)
    with pytest.raises(SystemExit, match="no eval_test.json for c_seed42"):
        load_scores(["a_seed42", "c_seed42"], "eval_test.json", tmp_path)


def test_render_reads_baselines_by_name_and_reports_a_clear_lever(tmp_path: Path) -> None:
    ids = [f"ISIC_{i}" for i in range(60)]
    base = dict(zip(ids, _photos(60, seed=5)))
    _record(tmp_path, "base_seed42", 42, base)
    _record(tmp_path, "base_seed43", 43, {i: d - 0.002 for i, d in base.items()})
    _record(tmp_path, "worse_seed42", 42, {i: d - 0.1 for i, d in base.items()})
    config = {"baselines": {"b": {"label": "the base recipe", "runs": ["base_seed42", "base_seed43"]}},
              "levers": [{"lever": "a worse lever", "runs": ["worse_seed42"], "against": "b"}]}
    text = render(config, tmp_path, replicates=500)
    assert "| the base recipe | 42, 43 |" in text
    row = next(line for line in text.splitlines() if line.startswith("| a worse lever"))
    assert "| 1 against 2 |" in row and "-0.099" in row and "own-test Dice lower, external Dice lower, external recall lower" in row
    assert "training noise only partly counted" in row  # one training run has no seed spread to draw from
    same = {**config, "levers": [{**config["levers"][0], "same_weights": True}]}
    assert "partly counted" not in render(same, tmp_path, replicates=100)
    with pytest.raises(SystemExit, match="no baseline 'nope'.*choose from b"):
        render({**config, "levers": [{"lever": "x", "runs": ["worse_seed42"], "against": "nope"}]}, tmp_path, 10)


def test_seed_level_effect_separates_only_beyond_the_seed_spread() -> None:
    calm = np.array([0.90, 0.901, 0.899])
    point, lo, hi = seed_effect(calm - 0.02, calm, np.random.default_rng(0), replicates=2000)
    assert point == pytest.approx(-0.02) and hi < 0
    spread = np.array([0.87, 0.93, 0.90])  # seeds further apart than the lever's effect
    _, lo, hi = seed_effect(spread - 0.02, calm, np.random.default_rng(0), replicates=2000)
    assert lo < 0 < hi
    # paired: every seed loses 0.02 against its own baseline, so the spread the sides share cancels
    _, lo, hi = seed_effect(spread - 0.02, spread, np.random.default_rng(0), replicates=2000, paired_seeds=True)
    assert lo == pytest.approx(-0.02) and hi == pytest.approx(-0.02)
    with pytest.raises(ValueError, match="two runs a side"):
        seed_effect(calm[:1], calm, np.random.default_rng(0))


def _framing(folder: Path, name: str, dice: float, photos: dict[str, float] | None = None) -> None:
    """A framing file with the run's centre-2x external mean, and its photos where given."""
    (folder / "framing").mkdir(exist_ok=True)
    doc = {"external": {"centre 2x": {"dice_mean": dice}}}
    if photos is not None:
        doc["per_image"] = {"external": {"centre 2x": [{"id": i, "dice": d, "recall": d} for i, d in photos.items()]}}
    (folder / "framing" / f"{name}.json").write_text(json.dumps(doc))


def test_the_centre_2x_column_reads_framing_files_by_run_or_alias(tmp_path: Path) -> None:
    ids = [f"ISIC_{i}" for i in range(40)]
    base = dict(zip(ids, _photos(40, seed=6)))
    runs = {"base_seed42": 0.90, "base_seed43": 0.905, "lever_seed42": 0.84, "lever_seed43": 0.845}
    for k, (run, centre) in enumerate(runs.items()):
        _record(tmp_path, run, 42 + k % 2, base)
        _framing(tmp_path, "shipped" if run == "base_seed43" else run, centre)
    config = {"framing_files": {"base_seed43": "shipped"},
              "baselines": {"b": {"label": "base", "runs": ["base_seed42", "base_seed43"]}},
              "levers": [{"lever": "closer crops hurt", "runs": ["lever_seed42", "lever_seed43"], "against": "b"},
                         {"lever": "one run", "runs": ["lever_seed42"], "against": ["base_seed42"]}]}
    np.testing.assert_allclose(framing_means(["base_seed42", "base_seed43"], config["framing_files"], tmp_path),
                               [0.90, 0.905])
    assert framing_means(["base_seed43"], {}, tmp_path) is None  # no file under the run's own name
    rows = {line.split(" | ")[0][2:]: line for line in render(config, tmp_path, replicates=500).splitlines()}
    assert "] (seeds only) |" in rows["closer crops hurt"] and "| -0.0600 [" in rows["closer crops hurt"] and rows["closer crops hurt"].endswith(
        "| centre-2x external Dice lower |")  # the same photos on both sides: only the framing moved
    assert "| -0.0600 (no interval: one run) |" in rows["one run"] and "centre-2x" not in rows["one run"]
    (tmp_path / "framing" / "lever_seed43.json").unlink()
    assert "| - | within noise |" in render(config, tmp_path, replicates=100).splitlines()[-2]


def test_framing_files_with_photos_draw_the_photos_too(tmp_path: Path) -> None:
    """Paired seeds whose centre-2x difference is the same on both seeds (-0.01) but swings
    +-0.15 from photo to photo: over seeds only that reads as a sure loss; drawn over the photos
    as well, it is noise. With a means-only file on either side the column falls back to seeds."""
    ids = [f"ISIC_{i}" for i in range(40)]
    base = dict(zip(ids, _photos(40, seed=7)))
    swing = np.where(np.arange(40) % 2 == 0, 0.15, -0.17)  # mean -0.01
    for seed in (42, 43):
        _record(tmp_path, f"base_seed{seed}", seed, base)
        _record(tmp_path, f"lever_seed{seed}", seed, base)
        _framing(tmp_path, f"base_seed{seed}", float(np.mean(list(base.values()))), base)
        lever = {i: base[i] + d for i, d in zip(ids, swing)}
        _framing(tmp_path, f"lever_seed{seed}", float(np.mean(list(lever.values()))), lever)
    config = {"baselines": {"b": {"label": "base", "runs": ["base_seed42", "base_seed43"]}},
              "levers": [{"lever": "swings", "runs": ["lever_seed42", "lever_seed43"], "against": "b",
                          "paired_seeds": True}]}
    row = render(config, tmp_path, replicates=500).splitlines()[-1]
    cell = row.split(" | ")[-2]
    assert cell.startswith("-0.0100 [") and "seeds only" not in cell and row.endswith("| within noise |")
    lo, hi = (float(v) for v in cell.split("[")[1].rstrip("]").split(", "))
    assert lo < -0.03 and hi > 0.01
    scores = lever_effects.framing_scores(["lever_seed42", "lever_seed43"], {}, tmp_path)
    assert scores is not None and scores.dice.shape == (2, 40)
    _framing(tmp_path, "base_seed43", float(np.mean(list(base.values()))))  # means only
    row = render(config, tmp_path, replicates=500).splitlines()[-1]
    assert "| -0.0100 [-0.0100, -0.0100] (seeds only) | centre-2x external Dice lower |" in row


def test_the_committed_tables_match_the_committed_run_records() -> None:
    """docs/generalization.md holds what lever_effects.py renders from configs/generalization/."""
    doc = (ROOT / "docs" / "generalization.md").read_text()
    assert BEGIN in doc and END in doc
    committed = doc.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert committed == render(yaml.safe_load(lever_effects.LEVERS.read_text()))
