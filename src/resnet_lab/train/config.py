"""Training configuration: one small dataclass with commented defaults."""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import asdict, dataclass, field

import torch

from ..data.config import check_field_types, check_seed
from .mixing import check_mix_alpha
from .optim import OPTIMIZERS, SCHEDULES
from .progressive import MIN_SIDE
from .tensorboard import require_tensorboard

__all__ = ["TrainConfig"]

SGD_MOMENTUM = 0.9  # the default of momentum
LOOKAHEAD_ALPHA = 0.5  # Zhang et al. 2019's slow step, the default of lookahead_alpha


@dataclass
class TrainConfig:
    """How a run trains: every field with its default and meaning (the comments beside them), the
    CLI flag of each named in its error. Bad values are refused when the config is made.

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
    lr: float = 0.1  # peak learning rate (SGD); use ~1e-3 for AdamW
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
        check_field_types(self, exact=False)
        check_seed(self.seed)
        if self.epochs < 1:
            raise ValueError(f"epochs (--epochs) must be >= 1, got {self.epochs}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr (--lr) must be a finite number > 0, got {self.lr} (when not given: 0.1 for sgd in train, 0.01 in finetune, 1e-3 for adamw)")
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
        if self.resume and not self.out:
            raise ValueError("resume (--resume) needs the run directory to continue: set out (--out DIR)")
        if self.tensorboard:
            if not self.out:
                raise ValueError("tensorboard (--tensorboard) writes its logs under the run directory: set out (--out DIR), "
                                 "or leave tensorboard off")
            require_tensorboard()  # fail before any data is loaded, saying how to install it
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing (--label-smoothing) must be in [0, 1), got {self.label_smoothing} (0.1 is usual; 0 turns it off)")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay (--weight-decay) must be a finite number >= 0 (0 turns it off), got {self.weight_decay}")
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise ValueError(f"momentum (--momentum) must be in [0, 1), got {self.momentum} (0.9 is usual)")
        if self.optimizer == "adamw" and (self.momentum != SGD_MOMENTUM or not self.nesterov):
            # AdamW has its own moment estimates (betas 0.9, 0.999): the two would change nothing
            given = [f"--momentum {self.momentum:g}"] * (self.momentum != SGD_MOMENTUM) + ["--no-nesterov"] * (not self.nesterov)
            raise ValueError(f"momentum and nesterov ({', '.join(given)}) are SGD's and do nothing with adamw: leave "
                             "them out, or use --optimizer sgd")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            # A negative max norm would flip the gradient's sign; 0 would zero every step.
            raise ValueError(f"grad_clip (--grad-clip) must be a finite number > 0 (or unset for no clipping), got {self.grad_clip}")
        if not (math.isfinite(self.warmup_epochs) and 0 <= self.warmup_epochs <= self.epochs):
            raise ValueError(f"warmup_epochs (--warmup-epochs) must be between 0 and epochs ({self.epochs}), got {self.warmup_epochs}")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ValueError(f"max_steps_per_epoch must be >= 1 (or None for whole epochs), got {self.max_steps_per_epoch}")
        if isinstance(self.checkpoint_segments, bool) or self.checkpoint_segments < 0:
            raise ValueError(f"checkpoint_segments (--checkpoint-segments) must be an int >= 0 (0 turns it off), got {self.checkpoint_segments!r}")
        if self.bf16 and self.fp16:
            raise ValueError("bf16 and fp16 (--bf16, --fp16) exclude each other: pick one autocast dtype")
        if self.stop_after is not None and not 1 <= self.stop_after <= self.epochs:
            raise ValueError(f"stop_after (--stop-after) must be between 1 and epochs ({self.epochs}), got {self.stop_after}")
        if self.stop_after is not None and self.stop_after < self.epochs and not self.out:
            raise ValueError(f"stop_after (--stop-after {self.stop_after}) pauses a run to resume it later, and without "
                             "out (--out DIR) nothing is saved to resume: set out, or leave stop_after off")
        if isinstance(self.eval_every, bool) or not isinstance(self.eval_every, int) or self.eval_every < 1:
            raise ValueError(f"eval_every (--eval-every) must be an int >= 1 (1 evaluates every epoch; the last epoch "
                             f"is always evaluated), got {self.eval_every!r}")
        self._check_recipe_options()
        bad = {k: v for k, v in self.lr_scale.items()
               if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (math.isfinite(v) and v >= 0)}
        if bad:
            raise ValueError(f"lr_scale factors must be finite and >= 0, got {bad}")
        check_field_types(self)  # after the range checks, which name their flags: 2.5 epochs is an error here

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
        if not (math.isfinite(self.lookahead_alpha) and 0 < self.lookahead_alpha <= 1):
            raise ValueError(f"lookahead_alpha (--lookahead-alpha) must be in (0, 1], got {self.lookahead_alpha} "
                             "(0.5 is the paper's)")
        if not self.lookahead and self.lookahead_alpha != LOOKAHEAD_ALPHA:
            raise ValueError(f"lookahead_alpha (--lookahead-alpha {self.lookahead_alpha:g}) only acts with lookahead "
                             "on: add --lookahead K (5 is the paper's) or drop --lookahead-alpha")
        if not (math.isfinite(self.norm_lr_scale) and self.norm_lr_scale >= 0):
            raise ValueError(f"norm_lr_scale (--norm-lr-scale) must be a finite number >= 0 (1 leaves the rate "
                             f"unchanged), got {self.norm_lr_scale}")
        if not (math.isfinite(self.sam) and self.sam >= 0):
            raise ValueError(f"sam (--sam) must be a finite number >= 0 (SAM's rho: 0.05 is the paper's; 0 turns it "
                             f"off), got {self.sam}")
        if self.sam and self.fp16:
            # fp16's scaler skips a step whose gradients overflow; SAM would first move the weights along them
            raise ValueError("sam (--sam) does not combine with fp16 (--fp16): use --bf16, or leave SAM off")
        check_mix_alpha("mixup", self.mixup)
        check_mix_alpha("cutmix", self.cutmix)
        if self.progressive_resize is not None and self.epochs < 2:
            raise ValueError(f"progressive_resize (--progressive-resize) needs at least 2 epochs (the last one trains "
                             f"at full size), got epochs={self.epochs}; train longer or leave it off")
        if self.progressive_resize is not None and self.progressive_resize < MIN_SIDE:
            raise ValueError(f"progressive_resize (--progressive-resize) must be at least {MIN_SIDE} px, got "
                             f"{self.progressive_resize}; or leave it unset to train at full size")

    def to_dict(self) -> dict:
        return asdict(self)
