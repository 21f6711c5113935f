"""Dataset preparation: the official ISIC 2016 / 2017 / 2018, HAM10000 and PH2 archives (or their
extracted folders) into the project's layout (``images/``, ``masks/``, ``ids.txt``, a manifest),
and the download of the official archives.

- :mod:`.sources`: what each file of an archive or folder is (image, mask, ignored, stray), by name;
- :mod:`.convert`: one pair, one geometric transform (squash / crop / pad), JPEG + PNG;
- :mod:`.manifest`: the folder's records, and what a later run may skip;
- :mod:`.prepare`: the engine (parallel, atomic, resumable);
- :mod:`.download`: the official archives over HTTP, resumable and checked.
"""
from .convert import RESIZE_MODES, PairError, Settings
from .prepare import PrepareError, PrepareReport, prepare

__all__ = ["RESIZE_MODES", "PairError", "PrepareError", "PrepareReport", "Settings", "prepare"]
