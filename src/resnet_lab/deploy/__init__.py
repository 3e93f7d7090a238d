"""Ship a trained network: batch-norm folding, ONNX export, prediction on image files.

* :func:`fuse_bn` folds eval-mode batch norms into the conv/linear before them;
* :func:`export_onnx` / :func:`export_run` write an ONNX file that carries its preprocessing;
* :func:`predict_images` (PyTorch; :func:`iter_predictions` as it goes) and :class:`OnnxPredictor` (onnxruntime)
  classify image files;
* :func:`grad_cam` and :func:`overlay` show what the network looks at (the ``cam`` extra).
"""

from .cam import cam_paths, grad_cam, overlay, save_cams
from .export import export_onnx, export_run, read_onnx_metadata
from .fuse import FuseReport, count_bn, fuse_bn, fuse_bn_with_report, plan_bn_folding
from .predict import (ImageReadError, OnnxPredictor, iter_predictions, load_image, load_model_input, predict_images,
                      preprocess_image)

__all__ = [
    "FuseReport",
    "ImageReadError",
    "OnnxPredictor",
    "cam_paths",
    "count_bn",
    "export_onnx",
    "export_run",
    "fuse_bn",
    "fuse_bn_with_report",
    "grad_cam",
    "iter_predictions",
    "load_image",
    "load_model_input",
    "overlay",
    "plan_bn_folding",
    "predict_images",
    "preprocess_image",
    "read_onnx_metadata",
    "save_cams",
]
