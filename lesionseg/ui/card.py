"""The model card shown in the app: the weights' README.md without its YAML front matter."""
from __future__ import annotations

import re
from pathlib import Path

_FRONT_MATTER = re.compile(r"\A\ufeff?---[ \t]*\r?\n.*?\r?\n(---|\.\.\.)[ \t]*(\r?\n|\Z)", re.DOTALL)


def strip_front_matter(text: str) -> str:
    """Markdown without a leading ``---`` ... ``---`` YAML block."""
    return _FRONT_MATTER.sub("", text, count=1).lstrip("\r\n")


def find_model_card(source: str | None, revision: str | None = None) -> Path | None:
    """README.md of a local weights folder, or of a Hub repo if it is in the local cache (no download)."""
    from ..inference.weights import local_weights_folder, weights_source

    folder = local_weights_folder(source)
    if folder is not None:
        card = folder / "README.md"
        return card if card.is_file() else None
    src = weights_source(source)
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(src, "README.md", revision=revision)
    except Exception:  # noqa: BLE001 - an invalid repo id or cache layout: no card
        return None
    return Path(cached) if isinstance(cached, str) else None


def model_card_markdown(source: str | None, revision: str | None = None) -> str:
    """The card as Markdown, or a short note when the weights have none."""
    card = find_model_card(source, revision)
    if card is None:
        return f"*No model card (README.md) found for the weights `{source or 'weights/'}`.*"
    try:
        text = card.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        return f"*The model card {card.name} cannot be read ({type(e).__name__}).*"
    body = strip_front_matter(text).strip()
    return body or "*The model card is empty.*"
