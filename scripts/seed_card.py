"""The model card's run-to-run spread: the shipped run beside the same recipe trained with other seeds
(``<recipe>/other_seeds/*``), one row per seed, and the mean a retrain can expect."""
from __future__ import annotations

from pathlib import Path

SPREAD_KEYS = [("Dice", "dice_mean"), ("IoU", "iou_mean"), ("recall", "recall_mean"),
               ("precision", "precision_mean"), ("thresholded Jaccard", "thresholded_jaccard"),
               ("failure rate", "failure_rate")]


def seed_table(rows: list[tuple[str, dict, dict | None]]) -> str:
    """One row per seed (name, held-out test result, external result or None), cells *test / external*:
    rows scale to any number of seeds, where one column per seed and set would not."""
    lines = ["| seed | threshold | " + " | ".join(label for label, _ in SPREAD_KEYS) + " |",
             "| --- | --- |" + " --- |" * len(SPREAD_KEYS)]
    for name, test, ext in rows:
        cells = [f"{test[key]:.4f}" + (f" / {ext[key]:.4f}" if ext else "") for _, key in SPREAD_KEYS]
        lines.append(f"| {name} | {test['threshold']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_spread_section(recipe: Path, run: dict, shipped: dict, seeds: list[tuple[dict, dict]],
                        shipped_ext: dict | None = None, seeds_ext: list[dict | None] | None = None) -> str:
    """The shipped run beside the same recipe trained with other seeds, on the same held-out images
    (and the same external validation images, where both were evaluated there)."""
    rows = [(f"{run.get('seed', '?')} (shipped)", shipped, shipped_ext)]
    notes = []
    for (info, result), ext in zip(seeds, seeds_ext or [None] * len(seeds)):
        name = f"seed {info.get('seed', '?')}"
        rows.append((str(info.get("seed", "?")), result, ext if shipped_ext else None))
        diffs = ", ".join(f"{label} {result[key] - shipped[key]:+.4f}" for label, key in SPREAD_KEYS)
        notes.append(f"- {name}: `{info.get('command', '')}`, {info.get('epochs', '?')} epochs, "
                     f"{info.get('wall_minutes', '?')} min{' on ' + info['hardware'] if info.get('hardware') else ''}, best validation Dice {info.get('best_val_dice_at_0.5', float('nan')):.4f} "
                     f"(shipped run: {run.get('best_val_dice_at_0.5', float('nan')):.4f}); its own tuned threshold "
                     f"{result['threshold']:.2f}. Difference from the shipped run: {diffs}.")
    sets = "held-out test / external" if shipped_ext else "held-out test"
    return f"""## Run-to-run spread

The same split trained again with another seed (initialisation, shuffling and augmentation
differ; the recipe is the shipped one unless its epochs below differ), with its own threshold
tuned by the same rule and evaluated the same way on the same held-out test images
(`{recipe.as_posix()}/other_seeds/*/eval_test.json`, and `eval_external.json` on the external set):

{chr(10).join(notes)}
{seed_mean_sentence(shipped, [r for _, r in seeds], shipped_ext, seeds_ext)}
Per seed, each at its own threshold (per-image means; cells {sets}):

{seed_table(rows)}
"""


def seed_mean_sentence(shipped: dict, others: list[dict], shipped_ext: dict | None = None,
                       others_ext: list[dict | None] | None = None) -> str:
    """The Dice mean and range over every seed, the shipped one included (a paragraph), or "" with one
    other seed: what a retrain of the recipe can be expected to score, beside the shipped run's luck."""
    if len(others) < 2:
        return ""

    def summary(results: list[dict]) -> str:
        dice = [r["dice_mean"] for r in results]
        return f"{sum(dice) / len(dice):.4f} ({min(dice):.4f}-{max(dice):.4f})"
    text = f"Dice over the {len(others) + 1} seeds, the shipped one included: held-out test {summary([shipped, *others])}"
    if shipped_ext and others_ext and all(others_ext):
        text += f", external {summary([shipped_ext, *others_ext])}"
    return "\n" + text + ".\n"
