"""Section 8: the key figures of the native run and of the AVX2 run side by side.

``python -m benchmarks`` writes ``results.md`` where the CPU runs the bf16 path, and
``results_avx2.md`` where it does not (an AVX2-only CPU, or ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2 on a bf16 one). Each report shows this table from its own run and the
other's JSON as it was when this run was rendered: after measuring one class, re-render the other
with ``python -m benchmarks.report benchmarks/results[_avx2].json`` to refresh its table. A run
written under another name pairs the same way: ``results_epyc.json`` with ``results_epyc_avx2.json``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent


def is_native(res: dict[str, Any]) -> bool:
    """True for a run on the bf16 path (runs recorded before the field existed were)."""
    m = res["machine"]
    return bool(m.get("bf16_native", "bf16 yes" in m.get("capability", "bf16 yes")))


def _ours(section: dict[str, Any]) -> dict[str, Any]:
    return next((r for r in section.get("rows", []) if r.get("ours")), {})


def _forward(res: dict[str, Any]) -> str:
    o = _ours(res.get("forward") or {})
    base = next((r for r in (res.get("forward") or {}).get("rows", []) if "median_ms" in r), {})
    if "median_ms" not in o:
        return "-"
    return f"{o['median_ms']:.1f} vs {base['median_ms']:.1f} ms ({o.get('speedup', 0):.2f}x)"


def _photo(res: dict[str, Any]) -> str:
    rows = (res.get("photo") or {}).get("rows", [])
    if len(rows) < 2:
        return "not measured"
    return f"{rows[1]['median_ms']:.1f} vs {rows[0]['median_ms']:.1f} ms ({res['photo']['speedup']:.2f}x)"


def _e2e(res: dict[str, Any]) -> str:
    big = [r for r in (res.get("e2e") or {}).get("rows", []) if r["mode"] == "ours" and r["case"].startswith("4288")]
    return f"{big[0]['median_ms']:.0f} ms, {big[0]['peak_rss_mb']:.0f} MB" if big and "median_ms" in big[0] else "-"


def _batch(res: dict[str, Any]) -> str:
    rows = [r for r in (res.get("throughput") or {}).get("rows", []) if "images_per_s" in r]
    return " / ".join(f"{r['images_per_s']:.1f}" for r in rows[:2]) + " images/s" if rows else "-"


def _training(res: dict[str, Any]) -> str:
    rows = (res.get("training") or {}).get("rows", [])
    return f"{rows[-1]['speedup']:.2f}x ({rows[-1]['variant']})" if rows else "-"


FIGURES: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("default path", lambda r: _ours(r.get("forward") or {}).get("variant", "-")),
    ("forward 256x256, default vs fp32 eager", _forward),
    ("one 1024x768 photo, Predictor.predict + mask, default vs fast=False", _photo),
    ("4288x2848 JPEG end to end, time and peak RSS", _e2e),
    ("lesionseg predict, 1024x768: default outputs / mask only", _batch),
    ("training step vs fp32 eager", _training),
]


def twin_name(stem: str, native: bool) -> str:
    """The other class's JSON for a report named ``stem``: ``results`` <-> ``results_avx2``,
    ``results_epyc`` <-> ``results_epyc_avx2``."""
    base = stem[:-len("_avx2")] if stem.endswith("_avx2") else stem
    return f"{base}_avx2.json" if native else f"{base}.json"


def side_by_side(res: dict[str, Any], folder: Path = HERE, stem: str = "results") -> list[str]:
    """Markdown lines of section 8 for the run ``res`` (reported as ``stem``.md) and the other
    class's committed JSON (:func:`twin_name`)."""
    native = is_native(res)
    other_file = folder / twin_name(stem, native)
    other = json.loads(other_file.read_text()) if other_file.is_file() else None
    lines = ["## 8. Native and AVX2 side by side", ""]
    if other is None:
        how = "`scripts/as_avx2.sh python -m benchmarks`" if native else "`python -m benchmarks` without ISA caps"
        return lines + [f"Not shown: no {other_file.name} (run {how} to write it).", ""]
    runs = (res, other) if native else (other, res)

    def held(r: dict[str, Any]) -> str:
        caps = r["machine"].get("isa_caps", "none")
        return "" if caps in ("none", "", None) else f" under `{caps}`"

    head = [f"{'native' if i == 0 else 'AVX2'}{held(r)}: {r['machine'].get('capability', '-')} ({r['machine']['date']})"
            for i, r in enumerate(runs)]
    lines += ["| figure | " + " | ".join(head) + " |", "|---|---|---|"]
    lines += [f"| {name} | {fn(runs[0])} | {fn(runs[1])} |" for name, fn in FIGURES]
    return lines + ["", f"CPU: {runs[0]['machine']['cpu']} / {runs[1]['machine']['cpu']}.", ""]
