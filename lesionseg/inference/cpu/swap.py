"""Replace submodules of a model by type, wherever they sit in it."""
from __future__ import annotations

from typing import Callable

from torch import nn


def swap_modules(model: nn.Module, match: Callable[[nn.Module], bool],
                 replace: Callable[[nn.Module], nn.Module]) -> int:
    """Replace, in place, every submodule for which ``match(module)`` is true by ``replace(module)``.

    Targets are found by walking the module tree, not by attribute names, so a renamed attribute
    still gets its rewrite. Returns how many were replaced (the model itself is never replaced).
    """
    found = [(name, m) for name, m in model.named_modules() if name and match(m)]
    for name, module in found:
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, replace(module))
    return len(found)
