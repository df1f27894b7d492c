"""The typed IR: graph, lowering/raising, structural verification, printing."""

from . import files
from .files import FileRefused, Interrupted, Staged
from .graph import (IMPLICIT_PORT, Graph, GraphError, Initializer, ModelProps, Node, Value,
                    opset_of, shape_of, tensor_type)
from .onnx_io import ModelLoadError, filled, hollow, load, lower, open_model, raise_model, read_hollow, revert, save, save_bytes, skeleton
from .printer import dump
from .verify import verify

__all__ = ["FileRefused", "IMPLICIT_PORT", "Graph", "GraphError", "Initializer", "Interrupted",
           "ModelLoadError", "ModelProps", "Node", "Staged", "Value", "dump", "files", "filled", "hollow", "load",
           "lower", "open_model", "opset_of", "raise_model", "read_hollow", "revert", "save", "save_bytes", "shape_of", "skeleton", "tensor_type", "verify"]
