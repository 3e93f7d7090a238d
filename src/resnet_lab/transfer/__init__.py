"""Transfer learning: the three strategies (``all``, ``last``, ``head``), weight sources, input
adaptation and freezing that really freezes. Entry points: :func:`load_source`,
:func:`transfer_model`, :func:`finetune` (``resnet-lab finetune`` wires them in :mod:`resnet_lab.cli`).
See docs/TRANSFER.md.
"""

from .adapt import (
    ArchitectureMismatchError,
    LoadReport,
    adapt_first_conv,
    adapt_mean_std,
    first_conv_key,
    load_pretrained,
    normalize_keys,
)
from .finetune import (
    STRATEGIES,
    TransferPlan,
    check_transfer_options,
    finetune,
    transfer_model,
    with_source_preprocessing,
)
from .freeze import (
    FreezeReport,
    count_params,
    default_unfreeze_point,
    freeze,
    is_running_norm,
    params_from,
    stage_names,
    unfreeze,
)
from .heads import LinearWithHead, add_head, classifier_linear_name, fold_head, head_param_names
from .sources import WeightSource, infer_arch, load_source, parse_torchvision_name, torchvision_weights

__all__ = [
    "STRATEGIES",
    "ArchitectureMismatchError",
    "FreezeReport",
    "LinearWithHead",
    "LoadReport",
    "TransferPlan",
    "WeightSource",
    "adapt_first_conv",
    "adapt_mean_std",
    "add_head",
    "classifier_linear_name",
    "count_params",
    "default_unfreeze_point",
    "finetune",
    "check_transfer_options",
    "first_conv_key",
    "fold_head",
    "freeze",
    "head_param_names",
    "infer_arch",
    "is_running_norm",
    "load_pretrained",
    "load_source",
    "normalize_keys",
    "params_from",
    "parse_torchvision_name",
    "stage_names",
    "torchvision_weights",
    "transfer_model",
    "unfreeze",
    "with_source_preprocessing",
]
