"""Training configuration: one small dataclass with commented defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from .optim import OPTIMIZERS, SCHEDULES

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig:
    epochs: int = 10  # passes over the training set
    lr: float = 0.1  # peak learning rate (SGD); use ~1e-3 for AdamW
    optimizer: str = "sgd"  # sgd | adamw
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = True  # Nesterov momentum (SGD)
    weight_decay: float = 5e-4  # applied to conv/linear weights only, never to norm params or biases
    schedule: str = "onecycle"  # onecycle | cosine | step (the paper's /10 at 50% and 75%) | constant
    warmup_epochs: float = 0.0  # linear warmup (onecycle defaults to 25% of training when 0)
    label_smoothing: float = 0.0  # cross-entropy label smoothing (Szegedy et al. 2016)
    grad_clip: float | None = None  # clip the global gradient norm to this value
    channels_last: bool = False  # NHWC memory format for model and inputs
    bf16: bool = False  # bfloat16 autocast (CPU and CUDA); no GradScaler needed for bf16
    compile: bool = False  # torch.compile the model for training
    deterministic: bool = False  # torch.use_deterministic_algorithms: bit-exact resume
    seed: int = 0  # seeds weights (in the CLI), shuffling, augmentation and dropout
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    out: str | None = None  # run directory; None writes nothing
    resume: bool = False  # continue the run in `out` from its train_state.pt
    progress: bool = True  # tqdm progress bar per epoch
    plots: bool = True  # curves.png and confusion.png
    lr_scale: dict[str, float] = field(default_factory=dict)  # {param-name prefix: lr factor}
    max_steps_per_epoch: int | None = None  # cap on optimizer steps per epoch (experiments)
    checkpoint_segments: int = 0  # gradient checkpointing segments, for models that support it

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}: expected one of {', '.join(SCHEDULES)}")
        if self.resume and not self.out:
            raise ValueError("resume needs the run directory to continue: set out (--out DIR)")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
