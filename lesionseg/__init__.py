"""lesionseg: skin-lesion segmentation with DS-AttentionUNet (train, evaluate, predict, app)."""
import os as _os
import sys as _sys

__version__ = "0.1.0"

# torch's OpenMP threads (libgomp) keep spinning for milliseconds after each parallel region before
# they sleep. A process here mixes torch with OpenVINO or ONNX Runtime, each with its own threads
# (the exact and the fast path, the click refiner and the model), and those spinning threads take
# the cores the other runtime's next call needs (docs/benchmarks.md). A spin a tenth as long still
# covers the gaps between the ops of one forward. libgomp reads the variable once, when torch loads
# it, so this holds only where lesionseg is imported before torch; a value already set is kept.
GOMP_SPINCOUNT = "30000"
if "torch" not in _sys.modules:
    _os.environ.setdefault("GOMP_SPINCOUNT", GOMP_SPINCOUNT)
