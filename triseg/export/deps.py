"""The export's optional packages (onnx, onnxruntime, qonnx), imported only when an export needs them."""

from __future__ import annotations

import importlib
from types import ModuleType

from triseg.errors import TrisegError

INSTALL = "pip install -e '.[export]'"


def require(module: str) -> ModuleType:
    """Import ``module``; a missing package is a one-line error naming the install command."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise TrisegError(f"the export needs the package {package!r}, which is not installed: {INSTALL}") from None
