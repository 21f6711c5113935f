"""Gradio component tweaks used by the app."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image


class PhotoInput(gr.Image):
    """``gr.Image`` whose unreadable uploads give a one-line message instead of a generic error.

    Rendered by the frontend exactly as ``gr.Image`` (``is_template``).
    """

    is_template = True

    def preprocess(self, payload: Any) -> Any:
        try:
            return super().preprocess(payload)
        except gr.Error:
            raise
        except Exception as e:  # noqa: BLE001 - PIL raises many types for hostile bytes
            name = Path(getattr(payload, "orig_name", None) or getattr(payload, "path", None) or "image").name
            if isinstance(e, Image.DecompressionBombError):
                raise gr.Error(f"{html.escape(name)}: too many pixels to open safely; downscale the photo",
                               print_exception=False) from None
            raise gr.Error(f"{html.escape(name)}: not a readable image ({type(e).__name__}); "
                           "use a JPEG, PNG, BMP, TIFF or WebP photo", print_exception=False) from None
