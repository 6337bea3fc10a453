"""Model families with tap points, and the registry that names them."""

from triseg.models.registry import MODELS, build_model, model_class

__all__ = ["MODELS", "build_model", "model_class"]
