"""The optional packages SAM 2 needs (the ``sam`` extra): transformers and peft.

Modules of this package that import them call :func:`require_sam_extras` first, so that a
missing package is one clear sentence (:class:`~retinaseg.errors.MissingDependencyError`)
instead of an ImportError traceback. ``import retinaseg.models`` never imports them.
"""

from __future__ import annotations

import importlib

from retinaseg.errors import MissingDependencyError

INSTALL_HINT = "pip install 'retinaseg[sam]'"

_NEEDS = {  # module → a name it must provide (Sam2 models arrived in transformers 4.56)
    "transformers": "Sam2VideoModel",
    "peft": "LoraConfig",
}


def require_sam_extras() -> None:
    """Raise MissingDependencyError unless transformers (with SAM 2) and peft import."""
    for module, name in _NEEDS.items():
        try:
            mod = importlib.import_module(module)
            getattr(mod, name)
        except (ImportError, AttributeError):
            raise MissingDependencyError(
                f"SAM 2 needs the optional package '{module}' with '{name}' (the 'sam' extra); "
                f"install it with: {INSTALL_HINT}") from None
