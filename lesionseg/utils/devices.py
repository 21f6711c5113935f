"""The one device resolver: a ``--device`` name to a ``torch.device`` that exists on this machine.

It sits below every layer so that inference, training and the app resolve devices alike.
"""
from __future__ import annotations

import re

import torch

VALID_DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` -> cuda if available, else mps if available, else cpu. Unknown or unavailable -> ValueError.

    A ``torch.device`` is taken as already resolved and returned as it is."""
    if isinstance(name, torch.device):
        return name
    key = str(name).strip().lower()
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if key == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_ok else torch.device("cpu")
    if key == "cpu":
        return torch.device("cpu")
    if key == "mps":
        if not mps_ok:
            raise ValueError("device 'mps' is not available on this machine (use --device auto or cpu)")
        return torch.device("mps")
    if re.fullmatch(r"cuda(:\d+)?", key):
        if not torch.cuda.is_available():
            raise ValueError(f"device {key!r} requested but CUDA is not available (use --device auto or cpu)")
        idx = int(key.split(":")[1]) if ":" in key else 0
        if idx >= torch.cuda.device_count():
            raise ValueError(f"device {key!r}: only {torch.cuda.device_count()} CUDA device(s) present")
        return torch.device(key)
    raise ValueError(f"unknown device {name!r}; valid options: {', '.join(VALID_DEVICES)}")
