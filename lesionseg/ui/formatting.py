"""Text the app shows for a prediction: the measurements table, labelled as not a diagnosis."""
from __future__ import annotations


def _num(v: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if v is None else fmt.format(v)


def format_measurements(meas: dict) -> str:
    """Markdown summary for the app, labelled as image measurements (not a diagnosis)."""
    mm = meas.get("mm_per_px")
    area = f"{meas['area_px']:,} px ({meas['area_pct']:.1f} % of the image)"
    if mm:
        area += f", {meas['area_mm2']:.2f} mm²"
    diam = f"{meas['longest_diameter_px']:.0f} px" + (f" ({meas['longest_diameter_mm']:.2f} mm)" if mm else "")
    perim = f"{meas['perimeter_px']:.0f} px" + (f" ({meas['perimeter_mm']:.2f} mm)" if mm else "")
    lines = [
        "**Image measurements — not a diagnosis**",
        "",
        "| Measurement | Value |",
        "|---|---|",
        f"| Lesion area | {area} |",
        f"| Longest diameter | {diam} |",
        f"| Perimeter | {perim} |",
        f"| Separate regions | {meas['regions']} |",
        f"| Asymmetry index (0 = symmetric) | {_num(meas['asymmetry_index'])} |",
        f"| Border irregularity (1 − area / convex hull) | {_num(meas['border_irregularity'])} |",
        f"| Mean probability inside the outline | {_num(meas['mean_probability'])} |",
    ]
    flags = meas.get("flags") or []
    lines.append("")
    lines.append("⚠️ " + "; ".join(flags) if flags else "No flags.")
    return "\n".join(lines)
