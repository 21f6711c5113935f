#!/usr/bin/env python
"""lesionseg: skin-lesion segmentation app (Gradio). Layout and event wiring only.

    python app.py [--weights DIR_OR_REPO_ID] [--port 7860] [--share] [--auth USER:PASSWORD] ...

The page logic lives in lesionseg/ui/ (handlers, session, views, batch, launch); the segmentation
is the library's (lesionseg/inference/), the same the command line runs.
"""
from __future__ import annotations

import os

# no network at start-up: no analytics, no Hub telemetry, no flagging
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("GRADIO_FLAGGING_MODE", "never")


def _cap_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each busy worker thread its own arena; freed image buffers then stay spread
    over them and RSS creeps up under load (benchmarks/results_soak.md). Two arenas keep it flat."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass  # not glibc (macOS, Windows): nothing to tune


_cap_malloc_arenas()

from lesionseg.ui.launch import LaunchConfig, launch, load_predictor_or_exit, parse_args  # noqa: E402

DESCRIPTION = """# lesionseg: skin-lesion segmentation
Drop a dermoscopic photo: the lesion is outlined in about a second. Move the threshold for more
recall or more precision, then download the full-resolution mask. Not quite right? Click on the
overlay to correct the outline (**+** lesion, **−** not lesion) or paint it with the brush and
eraser. The **Batch** tab takes a whole folder, several photos or a ZIP.

> Research software, **not a medical device and not for diagnosis**. Measurements describe the
> image, not the patient.
"""

def create_demo(predictor, config: LaunchConfig):
    import gradio as gr

    from lesionseg.inference.weights import local_weights_folder, weights_source
    from lesionseg.operating_points import SCREENING, describe
    from lesionseg.ui import editing, handlers
    from lesionseg.ui.edit_handlers import CorrectionHandlers
    from lesionseg.ui.batch import TABLE_HEADERS
    from lesionseg.ui.components import PhotoInput
    from lesionseg.ui.card import model_card_markdown

    h = handlers.Handlers(predictor)
    ch = CorrectionHandlers(predictor, config.corrections_dir)
    start = min(max(h.presets[SCREENING], 0.01), 0.99)
    folder = local_weights_folder(config.weights)
    # a local folder by its name only, not the server's directory layout
    source = f"{folder.name}/" if folder is not None else weights_source(config.weights)
    model_line = (f"Model `{source}` on {predictor.device} · input {predictor.img_size} px · "
                  f"default threshold {predictor.threshold:.2f}" + (" · flip TTA" if config.tta else "")
                  + (" · click refiner" if predictor.can_refine else ""))

    with gr.Blocks(title="lesionseg", analytics_enabled=False, delete_cache=(3600, 3 * 3600)) as demo:
        gr.Markdown(DESCRIPTION)
        gr.Markdown(model_line, elem_id="model-line")
        with gr.Tabs():
            with gr.Tab("Single image", id="single"):
                with gr.Row():
                    with gr.Column(scale=1):
                        image = PhotoInput(label="Dermoscopic photo (drop, paste or click to browse)", type="filepath",
                                           image_mode=None, sources=["upload", "clipboard"], height=420,
                                           buttons=["fullscreen"], elem_id="photo")
                        preset = gr.Radio(handlers.preset_choices(h.presets), value=SCREENING, label="Operating point",
                                          elem_id="preset")
                        threshold = gr.Slider(0.01, 0.99, value=start, step=0.01, label="Threshold",
                                              info="lower = outline more (higher recall)", elem_id="threshold")
                        stats = gr.Markdown(describe(predictor.operating_points, start), elem_id="threshold-stats")
                        mm = gr.Number(label="Scale: mm per pixel (optional, for sizes in mm)", value=None, minimum=0,
                                       elem_id="mm-per-px")
                        if config.examples:
                            gr.Examples([[p] for p in config.examples], inputs=[image], label="Your examples")
                    with gr.Column(scale=1):
                        status = gr.Markdown(elem_id="status")
                        with gr.Row():
                            mode = gr.Radio(editing.MODE_CHOICES, value=ch.default_mode, scale=3,
                                            label="Click on the overlay to", elem_id="edit-mode")
                            brush = gr.Slider(2, 80, value=15, step=1, scale=2, label="Brush radius (px of the shown photo)",
                                              elem_id="brush-size")
                        with gr.Row():
                            undo = gr.Button("Undo", size="sm", elem_id="undo")
                            clear = gr.Button("Clear corrections", size="sm", elem_id="clear")
                            save = gr.Button("Save correction", size="sm", variant="primary",
                                             interactive=config.corrections_dir is not None, elem_id="save-correction")
                        edits = gr.Markdown(elem_id="corrections")
                        with gr.Tabs():
                            with gr.Tab("Overlay", id="overlay"):
                                ov = gr.Image(label="Overlay", format="jpeg", interactive=False, height=420,
                                              buttons=["fullscreen"], elem_id="overlay", elem_classes="view")
                            with gr.Tab("Mask", id="mask"):
                                mask = gr.Image(label="Mask", format="png", interactive=False, height=420,
                                                buttons=["fullscreen"], elem_id="mask", elem_classes="view")
                            with gr.Tab("Probability", id="probability"):
                                prob = gr.Image(label="Probability (dark 0, yellow 1)", format="jpeg",
                                                interactive=False, height=420, buttons=["fullscreen"],
                                                elem_id="probability", elem_classes="view")
                            with gr.Tab("Uncertainty", id="uncertainty"):
                                unc = gr.Image(label="Uncertainty (where flipped views disagree)", format="jpeg",
                                               interactive=False, height=420, buttons=["fullscreen"],
                                               elem_id="uncertainty", elem_classes="view")
                        meas = gr.Markdown(elem_id="measurements")
                        files = gr.File(label="Downloads: full-resolution mask and overlay (PNG), measurements (JSON)",
                                        file_count="multiple", interactive=False, elem_id="downloads")
                state = gr.State(None, time_to_live=3 * 3600)
                # the refine API's own components (never shown): photo + clicks in, outline out
                with gr.Row(visible=False):
                    api_photo = PhotoInput(type="filepath", image_mode=None, label="Photo")
                    api_clicks = gr.Textbox(label="Clicks: JSON list of [x, y, positive] in the photo's pixels")
                    api_threshold = gr.Number(None, label="Threshold (empty: the model's)")
                    api_overlay = gr.Image(format="jpeg", label="Overlay with the clicks")
                    api_mask = gr.File(label="Full-resolution mask (PNG)")
                    api_meas = gr.JSON(label="Measurements")
                    api_run = gr.Button()

            with gr.Tab("Batch", id="batch"):
                gr.Markdown("Drop a **folder**, or **several photos / a ZIP**. Each file gets a row; unreadable "
                            "files are reported and skipped. One ZIP holds every mask, overlay and a CSV.")
                with gr.Row():
                    folder = gr.File(label="Folder", file_count="directory", elem_id="batch-folder")
                    batch_files = gr.File(label="Photos or ZIP archives", file_count="multiple", elem_id="batch-files")
                with gr.Row():
                    batch_preset = gr.Radio(handlers.preset_choices(h.presets), value=SCREENING,
                                            label="Operating point", scale=3, elem_id="batch-preset")
                    run = gr.Button("Run batch", variant="primary", scale=1, elem_id="batch-run")
                batch_status = gr.Markdown(elem_id="batch-status")
                gallery = gr.Gallery(label="Overlays", columns=6, height=300, object_fit="contain",
                                     elem_id="batch-gallery")
                table = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, wrap=True, elem_id="batch-table",
                                     column_widths=["17%", "9%", "16%", "9%", "22%", "27%"])
                zip_file = gr.File(label="All results (ZIP)", interactive=False, elem_id="batch-zip")

            with gr.Tab("Model card", id="card"):
                gr.Markdown(model_card_markdown(config.weights, config.revision), elem_id="model-card")

        # single image: result on upload / paste / example, no extra click
        # the plain outline first; with --tta the flipped views follow from the same generator, then
        # the overlay is redrawn at the slider's value of that moment
        segmented = image.change(h.segment, [image, threshold, mm], [state, ov, mask, prob, unc, meas, status, files],
                                 api_name="segment", trigger_mode="always_last")
        segmented.then(ch.describe, state, edits, api_visibility="private", show_progress="hidden", queue=False)
        segmented.then(
            handlers.redraw_tta, [state, threshold, mm], [ov, mask, meas, files], api_visibility="private",
            show_progress="hidden", trigger_mode="always_last").then(
            handlers.downloads, [state, threshold, mm], files, api_name="downloads", show_progress="hidden",
            trigger_mode="always_last")
        # threshold: re-cut the kept probability map (state + threshold in, no model call)
        gr.on([threshold.release, mm.submit, mm.blur], handlers.rethreshold, [state, threshold, mm],
              [ov, mask, meas, files],
              api_name="rethreshold", trigger_mode="always_last", show_progress="hidden").then(
            handlers.downloads, [state, threshold, mm], files, api_visibility="private", show_progress="hidden")
        threshold.change(h.describe, threshold, [stats, preset], api_visibility="private", show_progress="hidden",
                         queue=False)
        preset.input(h.apply_preset, preset, threshold, api_visibility="private", show_progress="hidden").then(
            handlers.rethreshold, [state, threshold, mm], [ov, mask, meas, files], api_visibility="private",
            show_progress="hidden").then(
            handlers.downloads, [state, threshold, mm], files, api_visibility="private", show_progress="hidden")
        # corrections: each click, dab, undo or clear redraws like the slider, then rewrites the downloads
        corrected = [state, ov, mask, meas, files, edits]
        for event, fn, inputs in ((ov.select, ch.select, [state, mode, brush, threshold, mm]),
                                  (undo.click, ch.undo, [state, threshold, mm]),
                                  (clear.click, ch.clear, [state, threshold, mm])):
            event(fn, inputs, corrected, api_visibility="private", show_progress="hidden").then(
                handlers.downloads, [state, threshold, mm], files, api_visibility="private", show_progress="hidden")
        save.click(ch.save, [state, threshold], edits, api_visibility="private")
        api_run.click(ch.refine_api, [api_photo, api_clicks, api_threshold], [api_overlay, api_mask, api_meas],
                      api_name="refine")
        # batch: runs as soon as files arrive, or on the button
        gr.on([folder.upload, batch_files.upload, run.click], h.batch, [folder, batch_files, batch_preset],
              [gallery, table, zip_file, batch_status], api_name="batch", concurrency_limit=1)
    return demo


if __name__ == "__main__":
    cfg = parse_args()
    model = load_predictor_or_exit(cfg)
    launch(create_demo(model, cfg), cfg)
