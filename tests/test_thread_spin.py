"""Importing lesionseg before torch shortens the spin of torch's idle OpenMP threads (lesionseg/__init__.py).

libgomp reads GOMP_SPINCOUNT once, when torch loads it, so what can be checked without a clock is
that the variable is in the child's environment before torch loads and only then. How much CPU
the shorter spin saves depends on the CPU and on how busy the machine is: that is measured by
``python -m benchmarks.thread_spin`` (benchmarks/results_thread_spin*.md), not asserted here."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.thread_spin import idle_cpu_ms, render  # noqa: E402


def test_lesionseg_first_sets_the_spin_count_before_torch_loads() -> None:
    plain_ms, plain = idle_cpu_ms(samples=3)
    ours_ms, ours = idle_cpu_ms("\nimport lesionseg", samples=3)
    assert plain == "None" and ours == "30000"
    assert plain_ms >= 0 and ours_ms >= 0


def test_imported_after_torch_it_changes_nothing() -> None:
    # libgomp has read its settings by then: setting the variable would only mislead
    _, spin = idle_cpu_ms("\nimport torch\nimport lesionseg", samples=1)
    assert spin == "None"


def test_a_spin_count_set_by_the_user_is_kept() -> None:
    _, spin = idle_cpu_ms("\nimport lesionseg", samples=1, GOMP_SPINCOUNT="300000")
    assert spin == "300000"


def test_the_benchmark_renders_both_settings() -> None:
    res = {"machine": {"date": "d", "isa_caps": "none", "cpu": "c", "cores": 2, "isa": "avx2", "other_load": "l",
                       "torch": "t"}, "rounds": 2, "ratio_median": 5.0,
           "settings": {"libgomp's default (torch imported alone)": {"GOMP_SPINCOUNT": "None", "ms": [5.0, 4.0],
                                                                     "median_ms": 4.5},
                        "import lesionseg first": {"GOMP_SPINCOUNT": "30000", "ms": [1.0, 0.8], "median_ms": 0.9}}}
    text = render(res)
    assert "| import lesionseg first | 30000 | 0.90 | 1.00, 0.80 |" in text and "5.0x" in text
