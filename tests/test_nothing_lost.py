"""Nothing lost: a full disk, a SIGKILLed batch and every writer in the package.

A batch that stops half way (disk full, killed) leaves only complete files and can be finished by
running it again with ``--skip-existing``; the CSV then lists every image. Training kill / resume
is covered in ``test_training.py``.
"""
from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bad_inputs import photo
from lesionseg.cli.main import main

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
       "NO_ALBUMENTATIONS_UPDATE": "1"}
KINDS = ("mask", "overlay", "result")


def read_csv(path: Path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {r["id"]: r for r in csv.DictReader(f)}


def assert_only_complete_files(out: Path) -> None:
    """Every PNG decodes to the end; no temporary file is left."""
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    for png in out.glob("*.png"):
        with Image.open(png) as im:
            im.load()


# -- a disk that fills up ---------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1 MB tmpfs (root only); skips where mounting is not permitted."""
    d = tmp_path / "small"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here ({r.stderr.strip() or 'not root'})")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_disk_full_exit_3_no_partial_file_then_resume(small_disk: Path, tiny_model_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):  # noise does not compress: about 0.3 MB of PNGs per image, 1 MB holds 3
        Image.fromarray(rng.integers(0, 255, (160, 160, 3), dtype=np.uint8)).save(src / f"n{i}.png")
    out = small_disk / "out"
    args = ["predict", "--weights", str(tiny_model_dir), "--input_dir", str(src), "--output_dir", str(out),
            "--device", "cpu", "--no-fast"]
    rc = main(args)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lesionseg: error:")]
    assert rc == 3 and len(err) == 1, err
    assert "No space left" in err[0] and str(out) in err[0] and "--skip-existing" in err[0]
    assert_only_complete_files(out)
    done = [p for p in out.glob("*_result.png")]
    assert 1 <= len(done) < 8
    if (out / "predictions.csv").exists():  # written only if it fitted, then whole
        assert set(read_csv(out / "predictions.csv")) <= {f"n{i}" for i in range(8)}

    r = subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert main([*args, "--skip-existing"]) == 0
    rows = read_csv(out / "predictions.csv")
    assert sorted(rows) == [f"n{i}" for i in range(8)]
    assert sum(r["status"] == "skipped" for r in rows.values()) == len(done)
    assert {r["status"] for r in rows.values()} <= {"ok", "skipped"}
    assert_only_complete_files(out)


# -- a batch killed half way ----------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkilled_batch_is_finished_by_skip_existing(tiny_model_dir: Path, tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    n = 40
    for i in range(n):
        Image.fromarray(photo(600, 800, seed=i)).save(src / f"img{i:02d}.jpg", quality=90)
    cmd = [sys.executable, "-m", "lesionseg", "predict", "--weights", str(tiny_model_dir), "--input_dir", str(src),
           "--output_dir", str(out), "--device", "cpu"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if out.is_dir() and len(list(out.glob("*_result.png"))) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the batch finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    finished = {p.name[: -len("_result.png")] for p in out.glob("*_result.png")}
    assert 3 <= len(finished) < n
    for png in out.glob("[!.]*.png"):  # the kill left no cut file under a final name (temp files start with .)
        with Image.open(png) as im:
            im.load()

    r = subprocess.run([*cmd, "--skip-existing"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    rows = read_csv(out / "predictions.csv")
    assert sorted(rows) == [f"img{i:02d}" for i in range(n)]
    skipped = {k for k, row in rows.items() if row["status"] == "skipped"}
    assert finished <= skipped  # done before the kill: kept, not redone
    assert {row["status"] for row in rows.values()} <= {"ok", "skipped"}
    for k, row in rows.items():
        assert int(row["width"]) == 800 and int(row["height"]) == 600 and row["lesion_area_px"] != ""
        assert all((out / f"{k}_{kind}.png").is_file() for kind in KINDS)
    assert_only_complete_files(out)


# -- every writer in the package is atomic ----------------------------------------------------------

WRITE_CALL = re.compile(r"\.write_bytes\(|\.write_text\(|imwrite\(|savefig\(|torch\.save\(|\.to_csv\("
                        r"|open\([^)]*['\"][wax]b?['\"]|\.save\(")
# writes into a folder that is itself renamed into place, or into the app's private temporary folder
ALLOWED = {
    "lesionseg/utils/atomic.py": "the atomic helpers themselves",
    "lesionseg/training/checkpoint.py": "README.md inside a temporary folder that is swapped in whole",
    "lesionseg/data/inputs.py": "uploaded ZIP members copied into the app's private work folder",
}


def test_every_output_writer_is_atomic() -> None:
    offenders = []
    for py in sorted((REPO / "lesionseg").rglob("*.py")):
        rel = py.relative_to(REPO).as_posix()
        for no, line in enumerate(py.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if not WRITE_CALL.search(code) or rel in ALLOWED:
                continue
            # fine inside an atomic_path / atomic_save block (writes to its temporary path)
            if re.search(r"\btmp\b|atomic_", code):
                continue
            # encoding into an in-memory buffer (io.BytesIO) writes no file
            if re.search(r"\.save\(\w*_buf\b", code):
                continue
            # append-only JSON-lines logs: earlier lines are never rewritten (readers skip a cut last line)
            if re.search(r"\.jsonl['\"], ['\"]a['\"]", code):
                continue
            offenders.append(f"{rel}:{no}: {line.strip()}")
    assert not offenders, "non-atomic writes:\n" + "\n".join(offenders)
