"""Render the measured sections as Markdown (``benchmarks/results.md``) with a targets table."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .classes import side_by_side

TARGETS = {
    "forward": 2.5, "agree": 0.99, "peak_share": 0.25, "e2e_ms": 150.0, "e2e_rss_mb": 600.0,
    "batch_ips": 20.0, "train": 2.0, "photo": 2.0,
}


def _f(v: Any, fmt: str = ".1f") -> str:
    return "-" if v is None else format(v, fmt)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out + [""]


def _ours(fwd: dict[str, Any]) -> dict[str, Any]:
    return next(r for r in fwd["rows"] if r.get("ours"))


def _allocator_lines(fa: dict[str, Any]) -> list[str]:
    lines = ["### 1b. Allocator-neutral forward", ""]
    if "speedup" not in fa:
        return lines + [f"Not measured: {fa.get('skipped', 'section missing')}.", ""]
    b, o = fa["baseline"], fa["ours"]
    return lines + [
        "Section 1 runs every path with glibc's default malloc, which often returns the memory freed after one "
        "call to the kernel, so the next call faults it in again (column \"page faults / call\"). The same two "
        f"paths in a child process with `{fa['env']}` (mallopt(3)), where neither faults, so the ratio is the "
        "inference paths' alone:", ""] + _table(
        ["variant", "median ms", "min ms", "page faults / call", "speedup"],
        [["fp32 eager NCHW (baseline)", f"{b['median_ms']:.2f}", f"{b['min_ms']:.2f}", _f(b.get("page_faults"), ".0f"),
          "1.00x"],
         [f"project Predictor default ({fa['ours_path']})", f"{o['median_ms']:.2f}", f"{o['min_ms']:.2f}",
          _f(o.get("page_faults"), ".0f"), f"{fa['speedup']:.2f}x"]])


def _photo_lines(ph: dict[str, Any]) -> list[str]:
    lines = ["### 1c. One 1024x768 photo through the Python API", ""]
    if "speedup" not in ph:
        return lines + ["Not measured (section missing or failed).", ""]
    return lines + [
        f"`Predictor.predict(rgb).mask` on {ph['image']} upscaled to 1024x768 (resize, normalise, model, clean-up, "
        "mask at full size), the default path against `fast=False` in one process, round-robin "
        f"({ph.get('block', 1)} calls of each path back to back per round, as a process that runs one path "
        "sees it); speedup = median of the per-round ratios."
        + (f" One call at a time instead (each default call right after an exact one): "
           f"{ph['alternating_speedup']:.2f}x." if "alternating_speedup" in ph else ""),
        ""] + _table(
        ["variant", "median ms", "min ms", "speedup", "masks Dice vs fast=False"],
        [[r["variant"], f"{r['median_ms']:.1f}", f"{r['min_ms']:.1f}",
          f"{r['paired_speedup']:.2f}x", _f(r.get("dice"), ".4f")] for r in ph["rows"]])


def targets(res: dict[str, Any]) -> list[list[str]]:
    """[target, measured, met?] rows; a section that did not run counts as not met."""
    t, rows = TARGETS, []

    def add(name: str, measured: str, ok: bool | None) -> None:
        rows.append([name, measured, "n/a" if ok is None else ("**met**" if ok else "**not met**")])

    o = _ours(res["forward"])
    add(f"forward >= {t['forward']}x fp32 eager, masks Dice >= {t['agree']}",
        f"{_f(o.get('speedup'), '.2f')}x, Dice mean {_f(o.get('dice_mean'), '.4f')} (min {_f(o.get('dice_min'), '.4f')})",
        o.get("speedup", 0) >= t["forward"] and o.get("dice_mean", 0) >= t["agree"])
    fa = res.get("forward_alloc") or {}
    if "speedup" in fa:
        add(f"... allocator-neutral (1b: neither path page-faults) >= {t['forward']}x",
            f"{fa['speedup']:.2f}x ({fa['baseline']['median_ms']:.1f} vs {fa['ours']['median_ms']:.1f} ms)",
            fa["speedup"] >= t["forward"])
    ph = res.get("photo") or {}
    if "speedup" in ph:
        add(f"one 1024x768 photo (Predictor.predict + mask) >= {t['photo']:.0f}x fast=False, same process",
            f"{ph['speedup']:.2f}x ({ph['rows'][1]['median_ms']:.1f} vs {ph['rows'][0]['median_ms']:.1f} ms), "
            f"masks Dice {ph['rows'][1]['dice']:.4f}", ph["speedup"] >= t["photo"])
    share = next((r for r in res["peak"]["rows"] if r["variant"] == o["variant"]), None)
    add(f"forward >= {t['peak_share']:.0%} of measured matmul peak",
        f"{share['share']:.1%} of {share['peak_kind']} peak" if share else "-",
        bool(share and share["share"] >= t["peak_share"]))
    peers = {r["model"]: r for r in res["peers"]["rows"]}
    smp = peers.get("smp Unet(resnet34)")
    ours_ms = peers["DS-AttentionUNet (ours)"].get("project_path_ms")
    acc = {r["model"]: r["test_cleaned"] for r in (res.get("peer_accuracy") or {}).get("runs", [])}
    if smp and ours_ms:
        best = min(v for k, v in smp.items() if k.endswith("_ms"))
        measured = f"{ours_ms:.1f} ms vs {best:.1f} ms (its best path)"
        if {"ours", "smp_unet_resnet34"} <= set(acc):
            o, u = acc["ours"]["dice_mean"], acc["smp_unet_resnet34"]["dice_mean"]
            add("ours faster than Unet(resnet34) at 256, at equal or better test Dice (same recipe)",
                f"{measured}; Dice {o:.4f} vs {u:.4f} (section 3b)", ours_ms < best and o >= u)
        else:
            add("ours faster than Unet(resnet34) at 256, at equal or better test Dice", measured
                + "; Dice not measured (no benchmarks/peer_accuracy.json)", False)
    else:
        add("ours vs Unet(resnet34) latency", "smp not installed", False)
    big = [r for r in res["e2e"]["rows"] if r["mode"] == "ours" and r["case"].startswith("4288")]
    if big and "median_ms" in big[0]:
        b = big[0]
        add(f"4288x2848 JPEG end to end <= {t['e2e_ms']:.0f} ms median", f"{b['median_ms']:.0f} ms",
            b["median_ms"] <= t["e2e_ms"])
        add(f"... peak RSS <= {t['e2e_rss_mb']:.0f} MB", f"{b['peak_rss_mb']:.0f} MB",
            b["peak_rss_mb"] <= t["e2e_rss_mb"])
    else:
        add("4288x2848 JPEG end to end", "failed", False)
    for bt in res["throughput"]["rows"][:2]:  # the default outputs, then masks only
        what = "mask, overlay, result" if bt["mode"].endswith("(default)") else bt["mode"].split("predict ")[-1]
        add(f"batch of 1024x768 >= {t['batch_ips']:.0f} images/s ({what})",
            f"{_f(bt.get('images_per_s'))} images/s", bt.get("images_per_s", 0) >= t["batch_ips"])
    tr = res["training"]["rows"]
    add(f"training step >= {t['train']}x fp32 eager", f"{tr[-1]['speedup']:.2f}x ({tr[-1]['variant']})",
        tr[-1]["speedup"] >= t["train"])
    return rows


def render(res: dict[str, Any], path: Path | None = None) -> str:
    """The whole results file; ``path``: where it is written, so that section 8 pairs it with the
    other class's run of the same name (``benchmarks.classes.twin_name``)."""
    m = res["machine"]
    lines = ["# lesionseg benchmarks", "",
             "Generated by `python -m benchmarks`" + (" --quick (few iterations: figures are indicative only)"
                                                     if m["quick"] else "") + ". Medians of repeated runs; "
             "variants compared side by side run round-robin, and a speedup is the median of the per-round "
             "ratios to the baseline (robust to other load on the machine, see other_load).", "",
             "## Machine", ""]
    lines += _table(["item", "value"], [[k, m.get(k, "-")] for k in (
        "date", "cpu", "cores", "affinity", "isa", "capability", "isa_caps", "memory_gib", "threads", "python", "torch",
        "onnxruntime", "cuda", "other_load", "other_load_after", "wall_s")])
    lines += ["## Targets", ""] + _table(["target", "measured", "status"], targets(res))

    f = res["forward"]
    lines += ["## 1. Model forward, batch 1, 256x256", "",
              f"Agreement: masks at the model threshold ({f['threshold']:.2f}) vs fp32 eager on {f['images']}. "
              f"The project's Predictor default is **{f['ours']}**.", ""]
    lines += _table(["variant", "median ms", "min ms", "speedup", "page faults / call", "Dice mean", "Dice min",
                     "max |dprob|", "note"],
                    [[r["variant"], _f(r.get("median_ms"), ".2f"), _f(r.get("min_ms"), ".2f"),
                      _f(r.get("speedup"), ".2f") + ("x" if "speedup" in r else ""), _f(r.get("page_faults"), ".0f"),
                      _f(r.get("dice_mean"), ".4f"),
                      _f(r.get("dice_min"), ".4f"), _f(r.get("max_prob_diff"), ".3f"),
                      r.get("skipped") or (f"compile {r['compile_s']:.0f} s" if "compile_s" in r else "")]
                     for r in f["rows"]])

    lines += _allocator_lines(res.get("forward_alloc") or {})
    lines += _photo_lines(res.get("photo") or {})
    p = res["peak"]
    lines += ["## 2. FLOPs vs measured peak", "",
              f"Model: {p['flops'] / 1e9:.2f} GFLOP per 256x256 forward (FlopCounterMode; 2 FLOP per multiply-add). "
              "Peak: sustained " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in p["peaks"].items())
              + f" ({p['matmul_n']}x{p['matmul_n']} matmul, same threads).", ""]
    lines += _table(["variant", "GFLOP/s", "share of own-dtype peak", "share of fp32 peak"],
                    [[r["variant"], f"{r['gflops']:.0f}", f"{r['share']:.1%} ({r['peak_kind']})",
                      f"{r['share_fp32']:.1%}"] for r in p["rows"]])

    pe = res["peers"]
    lines += ["## 3. Peers at 256x256, random weights, same threads", ""]
    lines += _table(["model", "params (M)", "GFLOP", "fp32 eager ms", "bf16 + channels_last ms", "project path ms"],
                    [[r["model"], f"{r['params'] / 1e6:.2f}", f"{r['gflops']:.2f}", _f(r.get("fp32_ms"), ".2f"),
                      _f(r.get("bf16_cl_ms"), ".2f"), _f(r.get("project_path_ms"), ".2f")] for r in pe["rows"]])
    lines += [f"- not measured: {x}" for x in pe["missing"]] + ([""] if pe["missing"] else [])
    lines += _accuracy(res.get("peer_accuracy"))

    lines += ["## 4. End to end: JPEG file in, full-resolution mask PNG out", "",
              "One fresh process per case; peak RSS is the whole process (interpreter, torch, model, image). "
              "baseline = full-resolution decode + fp32 eager; ours = `Predictor.predict_file` + `save_png`.", ""]
    lines += _table(["case", "path", "median ms", "min ms", "RSS after load MB", "peak RSS MB", "note"],
                    [[r["case"], r["mode"] + (f" ({r['path']})" if "path" in r else ""), _f(r.get("median_ms")),
                      _f(r.get("min_ms")), _f(r.get("rss_loaded_mb"), ".0f"), _f(r.get("peak_rss_mb"), ".0f"),
                      r.get("error", "")] for r in res["e2e"]["rows"]])

    t = res["throughput"]
    lines += ["## 5. Batch: `lesionseg predict` over 1024x768 JPEGs", "",
              f"Made from {t['source']}; by default each image writes mask, overlay and side-by-side PNGs "
              "(`--outputs mask`: the mask PNG only). images/s counts "
              "the processing loop; 'incl. start' adds process start and model loading. The first two "
              "commands alternate for several rounds: the median round is shown, with the range.", ""]
    lines += _table(["command", "images", "rounds", "loop s", "images/s", "range", "images/s incl. start", "note"],
                    [[r["mode"], r["images"], r.get("rounds", 1), _f(r.get("loop_s")), _f(r.get("images_per_s")),
                      r.get("range", ""), _f(r.get("images_per_s_wall")), r.get("error", "")] for r in t["rows"]])

    tr = res["training"]
    lines += [f"## 6. Training step, 256x256, batch {tr['batch']}", "",
              f"Forward with deep supervision, bce_dice loss, backward, clipping, AdamW; "
              f"{tr.get('model', 'the default DSAttentionUNet (unet encoder)')}; on {tr['source']}. "
              f"Epoch = {tr['train_images']} training images, extrapolated from the median step (data loading "
              "excluded).", ""]
    lines += _table(["variant", "median s/step", "images/s", "speedup", "s/epoch"],
                    [[r["variant"], f"{r['median_ms'] / 1e3:.3f}", f"{r['images_per_s']:.1f}",
                      f"{r['speedup']:.2f}x", f"{r['epoch_s']:.0f}"] for r in tr["rows"]])

    lines += ["## 7. GPU", ""] + _gpu(res["gpu"], res.get("gpu_recorded"), res.get("peer_accuracy"))
    lines += side_by_side(res) if path is None else side_by_side(res, path.parent, path.stem)
    if res.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in res["notes"]] + [""]
    return "\n".join(lines)


def _accuracy(acc: dict[str, Any] | None) -> list[str]:
    """Section 3b: the peers trained with our recipe and scored on our held-out split."""
    if not acc:
        return ["## 3b. Accuracy at equal recipe", "", "Not recorded (benchmarks/peer_accuracy.json is absent).", ""]
    lines = ["## 3b. Accuracy at equal recipe", "",
             f"Recorded {acc['date']} by `python -m benchmarks.peer_training` on a lent GPU (not re-measured by this "
             f"run): {acc['what']}. Test metrics are per-image means of the cleaned masks at the tuned threshold.", ""]
    lines += _table(["model", "params (M)", "epochs", "best val Dice @0.5", "threshold", "test Dice", "IoU", "recall",
                     "precision", "thresholded Jaccard", "failure rate", "s/epoch", "note"],
                    [[r["model"], f"{r['parameters'] / 1e6:.2f}", r["epochs"], f"{r['best_val_dice_at_0.5']:.4f}",
                      f"{r['val_threshold']['threshold']:.2f}", f"{r['test_cleaned']['dice_mean']:.4f}",
                      f"{r['test_cleaned']['iou_mean']:.4f}", f"{r['test_cleaned']['recall_mean']:.4f}",
                      f"{r['test_cleaned']['precision_mean']:.4f}", f"{r['test_cleaned']['thresholded_jaccard']:.4f}",
                      f"{r['test_cleaned']['failure_rate']:.1%}", f"{r['median_epoch_s']:.1f}", r.get("note", "")]
                     for r in acc["runs"]])
    return lines


def _gpu(g: dict[str, Any], recorded: dict[str, Any] | None, acc: dict[str, Any] | None) -> list[str]:
    """Section 7 from this run's GPU, else from the last recorded ``python -m benchmarks.gpu``."""
    lines: list[str] = []
    if not g.get("available"):
        lines += [g.get("note", ""), ""]
        if not recorded or not recorded["gpu"].get("available"):
            return lines
        g, m = recorded["gpu"], recorded["machine"]
        lines += [f"Recorded {m['date']} by `python -m benchmarks.gpu` on {g['device']} (torch {g['torch']}, CUDA "
                  f"{g['cuda']}; host {m['cpu']}, {m['cores']} cores), alone on the GPU; committed as "
                  "benchmarks/results_gpu.json.", ""]
    else:
        lines += [f"Device: {g['device']} (torch {g['torch']}, CUDA {g['cuda']})", ""]
    a = g["agreement"]
    lines += [f"Forward, random input of the model's size; the bf16 path's masks against fp32 on {a['images']}: "
              f"Dice mean {a['dice_mean']:.4f}, min {a['dice_min']:.4f}.", ""]
    lines += _table(["model", "batch", "variant", "median ms", "images/s", "peak GPU MB"],
                    [[r["model"], r["batch"], r["variant"], f"{r['median_ms']:.2f}", f"{r['images_per_s']:.0f}",
                      _f(r.get("peak_mem_mb"), ".0f")] for r in g["rows"]])
    lines += ["peak GPU MB: torch.cuda.max_memory_allocated over the timed calls (weights, activations and "
              "cuDNN's autotuning workspaces).", ""]
    lines += ["Training step (deep-supervision bce_dice, backward, clipping, AdamW), DS-AttentionUNet; epoch = "
              "1,600 images from the median step, data loading excluded:", ""]
    lines += _table(["batch", "variant", "median ms/step", "images/s", "s/epoch (steps only)"],
                    [[r["batch"], r["variant"], f"{r['median_ms']:.1f}", f"{r['images_per_s']:.0f}",
                      f"{r['epoch_s_1600']:.1f}"] for r in g["train_rows"]])
    if acc:
        lines += ["Whole epochs on the real data (augmentation in 2-8 DataLoader workers, validation, checkpoints): "
                  + "; ".join(f"{r['model']} {r['median_epoch_s']:.1f} s median ({r.get('note', '')})"
                              for r in acc["runs"]) + ".", ""]
    return lines


def recorded(name: str) -> dict[str, Any] | None:
    """A committed measurement beside this file (GPU runs, trained peers), or None."""
    path = Path(__file__).with_name(name)
    return json.loads(path.read_text()) if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.report [results.json]``: re-render results.md from a run's JSON and the
    recorded GPU / accuracy files, without measuring again."""
    from lesionseg.utils.atomic import atomic_write_text

    ap = argparse.ArgumentParser(prog="python -m benchmarks.report", description=main.__doc__)
    ap.add_argument("results", type=Path, nargs="?", default=Path(__file__).with_name("results.json"))
    args = ap.parse_args(argv)
    res = json.loads(args.results.read_text())
    res["peer_accuracy"] = recorded("peer_accuracy.json")
    if not res["gpu"].get("available"):
        res["gpu_recorded"] = recorded("results_gpu.json")
    atomic_write_text(args.results.with_suffix(".md"), render(res, args.results))
    atomic_write_text(args.results, json.dumps(res, indent=1, default=str) + "\n")
    print(f"re-rendered {args.results.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
