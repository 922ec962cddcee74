"""Putting a trained model to use: :func:`load` a run directory into a :class:`Predictor` (one inference
path for Python, ``taskloom predict``, the ONNX export and the HTTP server)."""
from taskloom.serve.encoding import InputError, RowEncoder
from taskloom.serve.predictor import Predictor, find_model_dir, load

__all__ = ["InputError", "Predictor", "RowEncoder", "find_model_dir", "load"]
