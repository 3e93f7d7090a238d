"""Training configuration: one small dataclass with commented defaults."""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import asdict, dataclass, field, fields

import torch

from ..data.config import check_field_types, check_seed
from .mixing import check_mix_alpha
from .optim import OPTIMIZERS, SCHEDULES
from .progressive import MIN_SIDE
from .tensorboard import require_tensorboard

__all__ = ["TrainConfig"]

SGD_MOMENTUM = 0.9  # the default of momentum
LOOKAHEAD_ALPHA = 0.5  # Zhang et al. 2019's slow step, the default of lookahead_alpha
# lr when not given (None), by optimizer: train's from-scratch rates, the CLI's too (finetune's CLI
# takes 0.01 for sgd: it starts from a good point)
DEFAULT_LR = {"sgd": 0.1, "adamw": 1e-3}


@dataclass
class TrainConfig:
    """How a run trains: every field with its default and meaning (the comments beside them), the
    CLI flag of each named in its error. Bad values are refused when the config is made, and again
    when train() starts (:meth:`check`): a field changed after construction is checked too.
    ``lr=None`` (the default) becomes the optimizer's rate when the config is made: 0.1 for sgd,
    1e-3 for adamw (as the CLI's train); ``dataclasses.replace(c, optimizer="adamw")`` keeps ``c``'s
    rate, so pass ``lr=None`` with it for adamw's.

    The fields: ``epochs``, ``lr``, ``optimizer`` (sgd | adamw), ``momentum``, ``nesterov``,
    ``weight_decay`` (conv/linear weights only), ``schedule`` (onecycle | cosine | step | constant),
    ``warmup_epochs``, ``label_smoothing``, ``grad_clip``, ``channels_last``, ``bf16``, ``fp16``,
    ``compile``, ``deterministic``, ``seed``, ``device``, ``out`` (the run directory; None writes
    nothing), ``resume``, ``progress``, ``plots``, ``lr_scale`` ({parameter-name prefix: factor}),
    ``max_steps_per_epoch``, ``checkpoint_segments``, ``stop_after``, ``tensorboard``, and the
    recipe options of docs/RECIPES.md: ``ema``, ``lookahead``, ``lookahead_alpha``,
    ``norm_lr_scale``, ``progressive_resize``, ``mixup``, ``cutmix``, ``sam``; ``eval_every``.
    """

    epochs: int = 10  # passes over the training set
    lr: float | None = None  # peak learning rate; None: the optimizer's DEFAULT_LR (0.1 sgd, 1e-3 adamw), set when made
    optimizer: str = "sgd"  # sgd | adamw
    momentum: float = SGD_MOMENTUM  # SGD momentum
    nesterov: bool = True  # Nesterov momentum (SGD)
    weight_decay: float = 5e-4  # applied to conv/linear weights only, never to norm params or biases
    schedule: str = "onecycle"  # onecycle | cosine | step (the paper's /10 at 50% and 75%) | constant
    warmup_epochs: float = 0.0  # linear warmup (onecycle defaults to 25% of training when 0)
    label_smoothing: float = 0.0  # cross-entropy label smoothing (Szegedy et al. 2016)
    grad_clip: float | None = None  # clip the global gradient norm to this value
    channels_last: bool = False  # NHWC memory format for model and inputs
    bf16: bool = False  # bfloat16 autocast (CPU and CUDA); no GradScaler needed for bf16
    fp16: bool = False  # float16 autocast with a GradScaler (CUDA only: GPUs without bf16, T4/V100)
    compile: bool = False  # torch.compile the model for training
    deterministic: bool = False  # torch.use_deterministic_algorithms while train() runs (the caller's setting comes back): bit-exact resume
    seed: int = 0  # seeds weights (in the CLI), shuffling, augmentation and dropout
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    out: str | None = None  # run directory; None writes nothing
    resume: bool = False  # continue the run in `out` from its train_state.pt
    progress: bool = True  # tqdm progress bar per epoch, on a terminal only (train/bars.py)
    plots: bool = True  # curves.png and confusion.png
    lr_scale: dict[str, float] = field(default_factory=dict)  # {param-name prefix: lr factor}
    max_steps_per_epoch: int | None = None  # cap on optimizer steps per epoch (experiments)
    checkpoint_segments: int = 0  # gradient checkpointing segments, for models that support it
    stop_after: int | None = None  # stop after this many epochs of the schedule (a later resume continues)
    tensorboard: bool = False  # TensorBoard logs under out/tensorboard/ (the `tensorboard` extra)
    ema: float = 0.0  # decay per step of an EMA of the weights, which is then evaluated and saved (0.99); 0 = off
    lookahead: int = 0  # lookahead's k: fast steps per slow update (Zhang et al. 2019); 0 = off
    lookahead_alpha: float = LOOKAHEAD_ALPHA  # lookahead's slow step toward the fast weights
    norm_lr_scale: float = 1.0  # lr factor for the norm layers' weights and biases (times any lr_scale)
    progressive_resize: int | None = None  # side in px of epoch 1's training images, growing to full size
    mixup: float = 0.0  # Beta(a, a) of mixup's per-batch blend of two images and their labels (0.2); 0 = off
    cutmix: float = 0.0  # Beta(a, a) of CutMix's share of a pasted rectangle (1.0); 0 = off; with mixup: either, 50/50
    sam: float = 0.0  # SAM's rho (Foret et al. 2021): step with the gradient taken rho uphill (0.05); 2 passes a step; 0 = off
    eval_every: int = 1  # evaluate on the test set every N epochs and after the last

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Refuse bad values, each error naming the field and its flag, and resolve ``lr=None`` to the
        optimizer's default (:data:`DEFAULT_LR`). Run when the config is made and again when
        :func:`~resnet_lab.train.train` (or ``lr_find``) starts, so that a field changed afterwards
        (``config.epochs = 0`` in a notebook) is checked too. Each field's own kind and range first,
        then the exact kinds (2.5 epochs), then the checks that weigh fields against each other."""
        self._check_int_kinds()
        check_field_types(self, exact=False)
        check_seed(self.seed)
        self._check_ranges()
        self._check_recipe_options()
        check_field_types(self)  # after the range checks, which name their flags: 2.5 epochs is an error here
        if self.lr is None:  # after the optimizer is known to be one
            self.lr = DEFAULT_LR[self.optimizer]
        self._check_combinations()

    def _check_int_kinds(self) -> None:
        """An int field holding True or a string is named as an int field (the first pass of
        check_field_types takes int fields for numbers, so that 2.5 epochs meets its range check)."""
        for f in fields(self):
            value = getattr(self, f.name)
            if str(f.type) in ("int", "int | None") and value is not None and (
                    isinstance(value, bool) or not isinstance(value, numbers.Real)):
                raise TypeError(f"TrainConfig.{f.name} must be an int{' or None' if 'None' in str(f.type) else ''}, "
                                f"got {value!r}")

    def _check_ranges(self) -> None:
        """Each field on its own: its range, or the names it may take."""
        if not (math.isfinite(self.epochs) and self.epochs >= 1):
            raise ValueError(f"epochs (--epochs) must be >= 1, got {self.epochs}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr (--lr) must be a finite number > 0, got {self.lr} (when not given: 0.1 for sgd in "
                             "train, 0.01 in finetune, 1e-3 for adamw)")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}: expected one of {', '.join(SCHEDULES)}")
        if self.out is not None and not isinstance(self.out, (str, os.PathLike)):
            raise TypeError(f"out (--out) must be a path (str or pathlib.Path) or None, got {self.out!r}")
        if self.out is not None and not str(self.out).strip():  # "" used to mean "write nothing"
            raise ValueError("out (--out) is an empty string: give a run directory, or None to write nothing")
        if str(self.device) != "auto":
            try:  # the name only: whether this machine has it is checked when the run starts
                kind = torch.device(self.device).type
            except (RuntimeError, ValueError, TypeError):
                kind = None
            if kind not in ("cpu", "cuda", "mps"):
                raise ValueError(f"unknown device {str(self.device)!r} (--device): use auto, cpu, cuda, cuda:N or mps")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing (--label-smoothing) must be in [0, 1), got {self.label_smoothing} (0.1 is usual; 0 turns it off)")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay (--weight-decay) must be a finite number >= 0 (0 turns it off), got {self.weight_decay}")
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise ValueError(f"momentum (--momentum) must be in [0, 1), got {self.momentum} (0.9 is usual)")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            # A negative max norm would flip the gradient's sign; 0 would zero every step.
            raise ValueError(f"grad_clip (--grad-clip) must be a finite number > 0 (or unset for no clipping), got {self.grad_clip}")
        if not (math.isfinite(self.warmup_epochs) and 0 <= self.warmup_epochs <= self.epochs):
            raise ValueError(f"warmup_epochs (--warmup-epochs) must be between 0 and epochs ({self.epochs}), got {self.warmup_epochs}")
        if self.max_steps_per_epoch is not None and not self.max_steps_per_epoch >= 1:
            raise ValueError(f"max_steps_per_epoch must be >= 1 (or None for whole epochs), got {self.max_steps_per_epoch}")
        if not self.checkpoint_segments >= 0:
            raise ValueError(f"checkpoint_segments (--checkpoint-segments) must be an int >= 0 (0 turns it off), got {self.checkpoint_segments!r}")
        if self.stop_after is not None and not (isinstance(self.stop_after, numbers.Integral)
                                                and 1 <= self.stop_after <= self.epochs):
            raise ValueError(f"stop_after (--stop-after) must be between 1 and epochs ({self.epochs}), got "
                             f"{self.stop_after} (a whole number of epochs)")
        if not isinstance(self.eval_every, int) or self.eval_every < 1:
            raise ValueError(f"eval_every (--eval-every) must be an int >= 1 (1 evaluates every epoch; the last epoch "
                             f"is always evaluated), got {self.eval_every!r}")
        self._check_lr_scale()

    def _check_lr_scale(self) -> None:
        keys = [k for k in self.lr_scale if not isinstance(k, str)]
        if keys:  # {1: 2.0} was taken, and training failed on str.startswith
            raise TypeError(f"lr_scale keys must be parameter-name prefixes (str), e.g. {{'fc': 10.0}}, got {keys[0]!r}")
        bad = {k: v for k, v in self.lr_scale.items()
               if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (math.isfinite(v) and v >= 0)}
        if bad:
            raise ValueError(f"lr_scale factors must be finite and >= 0, got {bad}")

    def _check_combinations(self) -> None:
        """The fields weighed against each other, once each is known to be of its kind and range."""
        if self.resume and not self.out:
            raise ValueError("resume (--resume) needs the run directory to continue: set out (--out DIR)")
        if self.tensorboard:
            if not self.out:
                raise ValueError("tensorboard (--tensorboard) writes its logs under the run directory: set out (--out DIR), "
                                 "or leave tensorboard off")
            require_tensorboard()  # fail before any data is loaded, saying how to install it
        if self.optimizer == "adamw" and (self.momentum != SGD_MOMENTUM or not self.nesterov):
            # AdamW has its own moment estimates (betas 0.9, 0.999): the two would change nothing
            given = [f"--momentum {self.momentum:g}"] * (self.momentum != SGD_MOMENTUM) + ["--no-nesterov"] * (not self.nesterov)
            raise ValueError(f"momentum and nesterov ({', '.join(given)}) are SGD's and do nothing with adamw: leave "
                             "them out, or use --optimizer sgd")
        if self.optimizer == "sgd" and self.momentum == 0 and not self.nesterov:
            # SGD with momentum 0 is plain SGD whatever nesterov says (build_optimizer passes nesterov only with momentum)
            raise ValueError("nesterov=False (--no-nesterov) does nothing with momentum 0 (--momentum 0), which is plain "
                             "SGD either way: leave it out")
        if self.bf16 and self.fp16:
            raise ValueError("bf16 and fp16 (--bf16, --fp16) exclude each other: pick one autocast dtype")
        if self.stop_after is not None and self.stop_after < self.epochs and not self.out:
            raise ValueError(f"stop_after (--stop-after {self.stop_after}) pauses a run to resume it later, and without "
                             "out (--out DIR) nothing is saved to resume: set out, or leave stop_after off")
        if not self.lookahead and self.lookahead_alpha != LOOKAHEAD_ALPHA:
            raise ValueError(f"lookahead_alpha (--lookahead-alpha {self.lookahead_alpha:g}) only acts with lookahead "
                             "on: add --lookahead K (5 is the paper's) or drop --lookahead-alpha")
        if self.sam and self.fp16:
            # fp16's scaler skips a step whose gradients overflow; SAM would first move the weights along them
            raise ValueError("sam (--sam) does not combine with fp16 (--fp16): use --bf16, or leave SAM off")
        if self.progressive_resize is not None and self.epochs < 2:
            raise ValueError(f"progressive_resize (--progressive-resize) needs at least 2 epochs (the last one trains "
                             f"at full size), got epochs={self.epochs}; train longer or leave it off")

    def evaluates(self, epoch: int) -> bool:
        """Whether the run evaluates on the test set after ``epoch`` (1-based): every ``eval_every``-th
        epoch and the last one. Not the one a ``stop_after`` pause ends on: an evaluation there would
        add a test figure and a candidate best epoch that the run in one session does not have."""
        return epoch % self.eval_every == 0 or epoch == self.epochs

    def _check_recipe_options(self) -> None:
        """EMA, lookahead, the norm layers' lr, progressive resizing, mixup and CutMix (docs/RECIPES.md)."""
        if not (math.isfinite(self.ema) and 0 <= self.ema < 1):
            raise ValueError(f"ema (--ema) must be a decay in [0, 1), got {self.ema} (0.99 is typical; 0 turns it off)")
        if isinstance(self.lookahead, bool) or not isinstance(self.lookahead, int) or self.lookahead < 0:
            raise ValueError(f"lookahead (--lookahead) must be an int >= 0 (k fast steps per slow update; 0 turns it "
                             f"off), got {self.lookahead!r}")
        if not (math.isfinite(self.lookahead_alpha) and 0 < self.lookahead_alpha < 1):
            # 1 moves the slow weights all the way to the fast ones: the plain optimizer, lookahead doing nothing
            raise ValueError(f"lookahead_alpha (--lookahead-alpha) must be in (0, 1), got {self.lookahead_alpha} "
                             "(0.5 is the paper's; 1 would be the plain optimizer: leave lookahead off for that)")
        if not (math.isfinite(self.norm_lr_scale) and self.norm_lr_scale >= 0):
            raise ValueError(f"norm_lr_scale (--norm-lr-scale) must be a finite number >= 0 (1 leaves the rate "
                             f"unchanged), got {self.norm_lr_scale}")
        if not (math.isfinite(self.sam) and self.sam >= 0):
            raise ValueError(f"sam (--sam) must be a finite number >= 0 (SAM's rho: 0.05 is the paper's; 0 turns it "
                             f"off), got {self.sam}")
        check_mix_alpha("mixup", self.mixup)
        check_mix_alpha("cutmix", self.cutmix)
        if self.progressive_resize is not None and self.progressive_resize < MIN_SIDE:
            raise ValueError(f"progressive_resize (--progressive-resize) must be at least {MIN_SIDE} px, got "
                             f"{self.progressive_resize}; or leave it unset to train at full size")

    def to_dict(self) -> dict:
        return asdict(self)
