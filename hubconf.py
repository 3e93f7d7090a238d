"""torch.hub entry points: every model of the zoo, with the shipped trained weights by tag.

    model = torch.hub.load("path/to/resnet-lab", "resnet20", weights="fashion-mnist", source="local")
    model = torch.hub.load("path/to/resnet-lab", "resnet56", num_classes=7, source="local")  # untrained

Each entry point is ``create_model(name, weights=..., **kwargs)`` (docs/WEIGHTS.md lists the tags);
``num_classes`` left out is the model's own: 10 for the CIFAR families, 1000 for the ImageNet ones.
"""

# Private aliases: torch.hub.list shows every public callable of this module (a class too).
import sys as _sys
from pathlib import Path as _Path

# torch.hub puts only this directory on sys.path; the package lives in src/ (a checkout that was
# never pip-installed still loads), so src/ goes first, before the imports below.
_sys.path.insert(0, str(_Path(__file__).resolve().parent / "src"))

# What the entry points import: the model zoo and the weights (`import resnet_lab` loads the rest of
# the package only on use). torch.hub checks this list only after this module has imported, so a
# missing one is named here instead.
dependencies = ["torch", "safetensors"]

try:
    from resnet_lab.models import create_model as _create_model
    from resnet_lab.models import list_models as _list_models
    from resnet_lab.models import model_info as _model_info
    from resnet_lab.weights import list_weights as _list_weights
except ModuleNotFoundError as _e:
    raise RuntimeError(f"resnet-lab's hub entry points need the {_e.name.split('.')[0]} package, which is not "
                       "installed: pip install torch safetensors") from None


def _entry_point(name: str):
    """``name(weights=None, **kwargs)``: the hub's callable for one model."""

    def load(weights: str | None = None, **kwargs):
        return _create_model(name, weights=weights, **kwargs)

    tags = [n.split(":", 1)[1] for n in _list_weights(name)]
    classes = _model_info(name).num_classes
    load.__name__ = load.__qualname__ = name
    load.__doc__ = (f"{name} from resnet-lab: create_model({name!r}, weights=..., **kwargs). "
                    f"weights: {', '.join(map(repr, tags)) if tags else 'none shipped'}; None for random initialization. "
                    f"num_classes left out: {classes}.")
    return load


# Names without a leading underscore are what torch.hub.list shows: one per registered model.
globals().update({_name: _entry_point(_name) for _name in _list_models()})
