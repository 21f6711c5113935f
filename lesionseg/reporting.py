"""The training run's test report: metrics CSV/JSON, best and worst cases, and an HTML page.

Written into ``<run>/visualizations/test_evaluation/`` as the research code laid it out.
"""
from __future__ import annotations

import csv
import html
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .data.io import load_image, load_mask
from .data.pairing import Pair, collect_dir_pairs, collect_pairs
from .evaluation import evaluate_pairs, format_table, select_pairs
from .inference.outputs import encode_png, overlay
from .inference.predictor import Predictor
from .metrics import METRICS
from .utils.atomic import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)
N_CASES = 8


def _case_panel(rgb: np.ndarray, gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """image | ground truth outline (green) + prediction (orange) | prediction mask."""
    both = overlay(overlay(rgb, gt, color=(0, 200, 0), alpha=0.0), pred, color=(255, 64, 0), alpha=0.3)
    m = np.repeat((pred * 255).astype(np.uint8)[..., None], 3, axis=2)
    return np.concatenate([rgb, both, m], axis=1)


def _write_cases(predictor: Predictor, rows: list[dict], by_id: dict, folder: Path) -> list[dict]:
    out = []
    for rank, row in enumerate(rows, 1):
        pair = by_id[row["id"]]
        rgb = load_image(pair.image)
        gt = load_mask(pair.mask)
        pred = predictor.predict(rgb).mask
        path = folder / f"{rank:02d}_{row['id']}.png"
        atomic_write_bytes(path, encode_png(_case_panel(rgb, gt, pred)))
        out.append({**row, "file": path})
    return out


def _html(result: dict[str, Any], best: list[dict], worst: list[dict], root: Path, title: str) -> str:
    def table(cases: list[dict]) -> str:
        cells = "".join(
            f"<tr><td>{html.escape(c['id'])}</td><td>{c['dice']:.3f}</td><td>{c['iou']:.3f}</td>"
            f"<td>{c['recall']:.3f}</td><td>{c['precision']:.3f}</td>"
            f"<td><img src='{html.escape(str(c['file'].relative_to(root)))}' width='600'></td></tr>" for c in cases)
        return ("<table><tr><th>id</th><th>Dice</th><th>IoU</th><th>recall</th><th>precision</th>"
                f"<th>image | green: truth, orange: prediction | mask</th></tr>{cells}</table>")

    summary = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>" for k, v in result.items()
                      if isinstance(v, float))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:4px 8px;text-align:left}}</style></head><body><h1>{html.escape(title)}</h1>
<p>{result['n_images']} held-out test images, threshold {result['threshold']:.2f}, metrics at each mask's own
resolution.</p><table>{summary}</table><h2>Worst {len(worst)} cases</h2>{table(worst)}
<h2>Best {len(best)} cases</h2>{table(best)}</body></html>"""


def write_test_report(predictor: Predictor, pairs: list[Pair], ids: list[str], out_dir: Path,
                      title: str = "lesionseg test evaluation") -> dict[str, Any]:
    """Evaluate the pairs of ``ids`` and write test_metrics.{csv,json}, best/ and worst/ panels,
    test_report.html."""
    result = evaluate_pairs(predictor, select_pairs(pairs, ids))
    atomic_write_text(out_dir / "test_metrics.json", json.dumps(result, indent=1))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["id", *METRICS])
    writer.writeheader()
    for row in result["per_image"]:
        writer.writerow({k: row[k] for k in ["id", *METRICS]})
    atomic_write_text(out_dir / "test_metrics.csv", buf.getvalue())
    by_id = {p.id: p for p in pairs}
    ranked = sorted(result["per_image"], key=lambda r: r["dice"])
    k = min(N_CASES, len(ranked))
    worst = _write_cases(predictor, ranked[:k], by_id, out_dir / "worst")
    best = _write_cases(predictor, ranked[::-1][:k], by_id, out_dir / "best")
    atomic_write_text(out_dir / "test_report.html", _html(result, best, worst, out_dir, title))
    log.info("test report: %s\n%s", out_dir / "test_report.html", format_table(result))
    return result


def write_test_evaluation(run: Any, cfg: Any) -> dict[str, Any]:
    """Report on a finished training run's held-out test IDs (``run``: training.RunResult)."""
    if cfg.images and cfg.masks:
        pairs = collect_pairs(Path(cfg.images), Path(cfg.masks), cfg.mask_suffix, strict=False)
    else:  # a fine-tuning run's test part is of its original data (see training/run_data.py)
        pairs = collect_dir_pairs(cfg.mix_dirs if cfg.finetune else cfg.data_dirs, cfg.mask_suffix, strict=False)
    predictor = Predictor.from_weights(run.best_model_dir, device=cfg.device)
    return write_test_report(predictor, pairs, run.split["test"],
                             Path(run.run_dir) / "visualizations" / "test_evaluation")
