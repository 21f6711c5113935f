"""Generated tables in the docs: the text between two HTML-comment markers is replaced, the rest kept."""
from __future__ import annotations

import sys
from pathlib import Path


def write_between(doc: Path, begin: str, end: str, text: str) -> bool:
    """Put ``text`` between the ``begin`` and ``end`` markers of ``doc``; False (and a message) without them."""
    content = doc.read_text()
    if begin not in content or end not in content:
        print(f"{doc}: markers {begin!r} ... {end!r} not found", file=sys.stderr)
        return False
    head, rest = content.split(begin, 1)
    doc.write_text(head + begin + "\n" + text + "\n" + end + rest.split(end, 1)[1])
    return True
