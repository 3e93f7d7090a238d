"""Loaders that yield ``(x, y)`` batches already on the training device.

* :class:`InMemoryLoader`, the fast path: the whole dataset is one uint8 tensor (N, C, H, W) on the
  device; each epoch is a seeded permutation, batches are index slices, and pad-crop/flip plus
  normalization run batch-wise on the device (the airbench approach; no per-sample Python).
* :class:`StreamingLoader`: a ``torch.utils.data.DataLoader`` over image files with workers, for
  folders too big for memory, with the same epoch order, sharding and resume contract.

Epoch order is a pure function of ``(seed, epoch)`` (:func:`epoch_permutation`), so resuming at an
epoch, or mid-epoch from :meth:`state_dict`, reproduces the same batches. Every ``iter()`` of a
loader is a whole pass, except the one right after ``load_state_dict``, which starts at its position. With ``world_size > 1``
every rank computes the same global permutation and takes its ``batch_size`` slice of each global
batch of ``batch_size * world_size`` samples, so the union over ranks of global batch ``i`` is batch
``i`` of one process with batch size ``batch_size * world_size``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterator, Sequence

import torch

from .._text import user_stacklevel
from .config import check_device_present, pick_device
from .transforms import (
    alternating_flips,
    check_erase_probability,
    check_flip_mode,
    crop_flip,
    erase,
    sample_crop_flip_params,
    sample_erase_params,
)

__all__ = ["InMemoryLoader", "StreamingLoader", "batch_slices", "epoch_permutation", "epoch_seed"]

_AUGMENT_STREAM = 0x5EED_A06  # separates the augmentation random stream from the order stream
_ERASE_STREAM = 0x5EED_E2A5  # random erasing has its own stream: turning it on leaves crops unchanged
_FLIP_STREAM = 0x5EED_F11B  # the alternating flip's epoch-0 half: its own stream, so crops stay unchanged


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """The generator seed for one epoch: a fixed mix of ``seed``, ``epoch`` and a stream id, so
    (seed=0, epoch=1) and (seed=1, epoch=0) do not share an order."""
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + int(stream)) % (2**63 - 1)


def epoch_permutation(n: int, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
    """The global sample order of one epoch (int64, CPU): ``randperm`` from a generator seeded by
    :func:`epoch_seed`, or ``arange(n)`` when not shuffling.

    Args:
        n: dataset size.
        seed: the run's seed.
        epoch: the epoch number (0-based).
        shuffle: False gives the identity order (test sets).
    """
    if not shuffle:
        return torch.arange(n)
    g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return torch.randperm(n, generator=g)


def batch_slices(
    n: int, batch_size: int, *, drop_last: bool, rank: int = 0, world_size: int = 1, drop_single: bool = False
) -> list[tuple[int, int]]:
    """``(start, end)`` positions into the epoch order for this rank's batches.

    Args:
        n: dataset size.
        batch_size: per-rank batch size.
        drop_last: drop the last incomplete global batch.
        rank, world_size: this process's shard; global batch ``i`` covers positions
            ``[i*B*W, (i+1)*B*W)`` and rank ``r`` takes ``[i*B*W + r*B, i*B*W + (r+1)*B)``.
        drop_single: also drop a final batch of one sample (batch norm cannot use it in training).

    If ``drop_last`` would leave no batch at all (fewer samples than one global batch), one smaller
    batch of ``n // world_size`` samples per rank is used instead, with a warning.
    """
    if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need batch_size >= 1 and 0 <= rank < world_size, got {batch_size=}, {rank=}, {world_size=}")
    gb = batch_size * world_size
    full = n // gb
    out = [(i * gb + rank * batch_size, i * gb + (rank + 1) * batch_size) for i in range(full)]
    rem = n - full * gb
    if rem and not drop_last:
        per = math.ceil(rem / world_size)
        s = full * gb + rank * per
        e = min(s + per, n)
        if e - s > (1 if drop_single else 0):
            out.append((s, e))
    if drop_last and full == 0:
        per = n // world_size
        if per >= (2 if drop_single else 1):
            warnings.warn(
                f"only {n} samples for a global batch of {gb}: using one batch of {per} per rank "
                "instead of none; lower --batch-size to silence this",
                stacklevel=user_stacklevel(),
            )
            out = [(rank * per, (rank + 1) * per)]
    return out


def _check_images_and_labels(images: torch.Tensor, labels: torch.Tensor) -> None:
    """Refuse what the in-memory loader would misread, in one line with the way out: images that
    are not uint8 (N, C, H, W) (0..1 floats would be normalized as 0..255 ones), labels that are not
    one class index per image."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        shape = tuple(images.shape)
        hints = []
        if images.ndim == 3:
            hints.append("add gray images' channel dimension with images.unsqueeze(1)")
        elif images.ndim == 4 and shape[-1] in (1, 3) and shape[1] not in (1, 3):
            hints.append("put (N, H, W, C) images' channels first with images.permute(0, 3, 1, 2)")
        if images.is_floating_point():
            hints.append("convert 0..1 floats with (images * 255).round().to(torch.uint8)")
        elif images.dtype != torch.uint8:
            hints.append("convert 0..255 integers with images.to(torch.uint8)")
        raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {shape}: "
                         f"{'; '.join(hints) or 'reshape them to one (N, C, H, W) batch'}")
    n = images.shape[0]
    if labels.shape != (n,):
        flatten = ": flatten them with labels.view(-1)" if labels.numel() == n else ""
        raise ValueError(f"labels must have shape ({n},), one class index per image, got {tuple(labels.shape)}{flatten}")


class _EpochState:
    """What both loaders share: this rank's batches of an epoch, the epoch counter and position
    (the resume contract), and the memory format of the batches they yield."""

    batch_size: int
    shuffle: bool
    drop_last: bool
    rank: int
    world_size: int
    channels_last: bool
    num_samples: int
    epoch: int
    position: int

    def _plan_batches(self, num_samples: int) -> None:
        """Fix this rank's ``(start, end)`` slices of every epoch's order over ``num_samples``
        samples and start at epoch 0, batch 0. A one-sample tail is dropped when shuffling
        (training), since batch norm needs more than one value per channel.

        Args:
            num_samples: dataset size; the sharding attributes must be set already.
        """
        self.num_samples = int(num_samples)
        self._slices = batch_slices(
            self.num_samples, self.batch_size, drop_last=self.drop_last, rank=self.rank,
            world_size=self.world_size, drop_single=self.shuffle,
        )
        self.epoch, self.position = 0, 0
        self._resume = False  # load_state_dict asked the next pass to start at `position`

    def __len__(self) -> int:
        return len(self._slices)

    def _to_memory_format(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its first batch (call before iterating, like
        ``DistributedSampler.set_epoch``). Without calls the epoch advances after each full pass."""
        self.epoch = int(epoch)
        self.position = 0
        self._resume = False

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "position"}``: the epoch being read and the index of the next batch in it.
        Plain ints, loadable with ``torch.load(weights_only=True)``."""
        return {"epoch": int(self.epoch), "position": int(self.position)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next iteration continues epoch ``state["epoch"]`` at batch ``state["position"]``.
        Only that one: the pass after it, and every pass not preceded by this call, start at batch 0."""
        self.epoch = int(state["epoch"])
        self.position = int(state.get("position", 0))
        self._resume = True

    @property
    def resuming(self) -> bool:
        """Whether the next pass continues at :meth:`state_dict`'s position (set by :meth:`load_state_dict`)."""
        return self._resume

    def _start_pass(self) -> tuple[int, int]:
        """The epoch and first batch of a new pass: batch 0, unless :meth:`load_state_dict` set a
        position for this pass. A pass left part-way (a ``break``, ``next(iter(loader))``, an
        error) is not continued by the next one: evaluating after peeking at a batch covers the
        whole split."""
        start = self.position if self._resume else 0
        self._resume, self.position = False, start
        return self.epoch, start


class InMemoryLoader(_EpochState):
    """Batches from a uint8 dataset held on the device, augmented and normalized batch-wise.

    Args:
        images: uint8 (N, C, H, W).
        labels: integer (N,).
        batch_size: samples per batch per rank.
        mean, std: per-channel normalization on the 0..1 scale.
        shuffle: a new seeded permutation every epoch (train) or the stored order (test).
        augment: zero-pad by ``padding`` then random crop back, and random horizontal flip.
        drop_last: drop the last incomplete batch. A final one-sample batch is dropped anyway when
            shuffling (training), since batch norm needs more than one value per channel.
        padding: pixels of padding for the random crop (4 for 28-32 px data).
        flip: allow the horizontal flip (turn off for data where mirroring changes the class).
        flip_mode: "random" (each sample flipped with probability 1/2, drawn anew every epoch) or
            "alternate" (airbench's alternating flip: a seeded random half of the samples in epoch
            0, then each sample the opposite of the epoch before; see
            :func:`~resnet_lab.data.transforms.alternating_flips`). Needs ``augment`` and ``flip``.
            The crops are the same in both modes.
        random_erasing: with ``augment``, the probability of erasing a random rectangle of each
            sample to the channel mean (0 after normalization), after crop and flip; see
            :func:`~resnet_lab.data.transforms.sample_erase_params`. 0 turns it off.
        seed: run seed; the epoch's order and augmentation come from ``(seed, epoch)``.
        device: where the data live and batches are produced.
        rank, world_size: distributed shard (see module docstring).
        channels_last: return ``x`` in ``torch.channels_last`` memory format.

    Yields ``(x, y)``: float32 (B, C, H, W) normalized, int64 (B,), both on ``device``.
    ``__len__`` is the number of batches per epoch. After each batch, ``last_indices`` (dataset
    indices), ``last_params`` (``(dy, dx, flips)`` or None) and ``last_erase`` (``(top, left, eh,
    ew)`` or None) say what was drawn.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        shuffle: bool = False,
        augment: bool = False,
        drop_last: bool = False,
        padding: int = 4,
        flip: bool = True,
        flip_mode: str = "random",
        random_erasing: float = 0.0,
        seed: int = 0,
        device: str | torch.device = "cpu",
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
    ) -> None:
        check_erase_probability(random_erasing, augment=augment)
        check_flip_mode(flip_mode, augment=augment, flip=flip)
        _check_images_and_labels(images, labels)
        side = min(images.shape[-2:])
        if augment and not 0 <= int(padding) <= side // 2:
            raise ValueError(f"crop_padding {padding} (--crop-padding) must be between 0 and half the image side "
                             f"({side // 2} px of {side}): a larger shift moves the object out of the picture "
                             f"(side / 8, {max(1, round(side / 8))} px, is the usual and the default)")
        check_device_present(device)
        self.device = pick_device(device)  # "auto" as load_data and train choose
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size = int(batch_size)
        self._set_normalization(mean, std)
        self.shuffle, self.augment, self.drop_last = shuffle, augment, drop_last
        self.padding, self.flip, self.flip_mode, self.seed = int(padding), flip, flip_mode, int(seed)
        self.random_erasing = float(random_erasing)
        self.rank, self.world_size = int(rank), int(world_size)
        self.channels_last = channels_last
        self._plan_batches(images.shape[0])
        self.last_indices: torch.Tensor | None = None
        self.last_params: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.last_erase: tuple[torch.Tensor, ...] | None = None

    def _set_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Normalize with these per-channel statistics (the training split's, or given ones).

        Args:
            mean, std: per-channel statistics on the 0..1 scale, one per image channel.
        """
        c = self.images.shape[1]
        if len(mean) != c or len(std) != c:
            raise ValueError(f"mean/std need {c} values (one per channel), got {len(mean)}/{len(std)}")
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        # Normalization constants live on the device once, not rebuilt from Python lists per batch.
        self._mean255 = torch.tensor(self.mean, dtype=torch.float32, device=self.device).view(1, c, 1, 1) * 255
        self._inv_std255 = 1.0 / (torch.tensor(self.std, dtype=torch.float32, device=self.device).view(1, c, 1, 1) * 255)

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float32 normalized; the same numbers as ``transforms.normalize``."""
        return (x.to(torch.float32) - self._mean255) * self._inv_std255

    def normalized_images(self, limit: int | None = None) -> torch.Tensor:
        """The first ``limit`` images (all when None) in dataset order, normalized as the batches
        are but neither augmented nor shuffled: float32 (N, C, H, W) on the device. For statistics
        of the training inputs, e.g. :func:`~resnet_lab.models.whitening.whiten_first_conv`.

        Args:
            limit: at most this many images (>= 1), or None for all.
        """
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be a positive number of images (or None for all), got {limit}")
        return self._normalize(self.images[:limit])

    def augment_params(
        self, epoch: int, order: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The crop offsets and flips of every position in epoch ``epoch``'s global order (so all
        ranks agree and a resumed epoch redraws the same values).

        Args:
            epoch: the epoch number (0-based).
            order: that epoch's :func:`epoch_permutation` (computed when None); the alternating
                flip is per sample, so it is read in this order.
        """
        g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch, _AUGMENT_STREAM))
        dy, dx, flips = sample_crop_flip_params(self.num_samples, self.padding, self.flip, g)
        if self.flip_mode == "alternate":
            if order is None:
                order = epoch_permutation(self.num_samples, self.seed, epoch, self.shuffle)
            # Seeded as for epoch 0 in every epoch: the same half, negated in odd epochs.
            first = torch.Generator().manual_seed(epoch_seed(self.seed, 0, _FLIP_STREAM))
            flips = alternating_flips(self.num_samples, epoch, first)[order.cpu()]
        return dy, dx, flips

    def erase_params(self, epoch: int) -> tuple[torch.Tensor, ...]:
        """The erasing rectangles ``(top, left, eh, ew)`` of every position in epoch ``epoch``'s
        global order (``eh == 0`` where a sample is not erased), from their own seeded stream."""
        g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch, _ERASE_STREAM))
        _, _, h, w = self.images.shape
        return sample_erase_params(self.num_samples, h, w, self.random_erasing, g)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._pass(*self._start_pass())  # now, not at the first next(): iter() starts the pass

    def _pass(self, epoch: int, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of epoch ``epoch`` from batch ``start``; at the end the epoch advances."""
        order = epoch_permutation(self.num_samples, self.seed, epoch, self.shuffle).to(self.device)
        params = None
        if self.augment:
            params = tuple(p.to(self.device) for p in self.augment_params(epoch, order))  # one copy per epoch
        erasing = None
        if self.augment and self.random_erasing > 0:
            erasing = tuple(p.to(self.device) for p in self.erase_params(epoch))
        for i in range(start, len(self._slices)):
            s, e = self._slices[i]
            idx = order[s:e]
            x = self.images[idx]  # (B, C, H, W) uint8
            if params is not None:
                dy, dx, fl = (p[s:e] for p in params)
                x = crop_flip(x, dy, dx, fl, self.padding)
                self.last_params = (dy, dx, fl)
            x = self._normalize(x)
            if erasing is not None:
                self.last_erase = tuple(p[s:e] for p in erasing)
                x = erase(x, *self.last_erase)
            self.last_indices = idx
            self.position = i + 1
            yield self._to_memory_format(x), self.labels[idx]
        self.epoch, self.position = epoch + 1, 0


class _SeededSamples(torch.utils.data.Dataset):
    """``dataset[index]`` for keys ``(index, seed)``, with torch's generator seeded by ``seed`` for
    that one sample and restored afterwards (so the caller's random stream, e.g. dropout's when
    decoding in this process, is left as it was)."""

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


class StreamingLoader(_EpochState):
    """A ``DataLoader`` over a map-style dataset (files decoded in workers), with the same epoch
    order, sharding, resume and device contract as :class:`InMemoryLoader`.

    Args:
        dataset: returns ``(x float32 (C, H, W) normalized, label int)``.
        batch_size: samples per batch per rank.
        shuffle: seeded permutation per epoch.
        drop_last: drop the last incomplete batch (a one-sample tail is dropped when shuffling).
        seed: run seed; order comes from ``(seed, epoch)``, and each sample's random transforms
            from a seed of ``(seed, epoch, position in the epoch)``: the same batches for any
            worker count, and after a resume mid-epoch.
        num_workers: decoding processes (0 decodes in this process).
        device: where batches are moved (pinned memory and non-blocking copies on CUDA).
        rank, world_size: distributed shard.
        channels_last: return ``x`` in ``torch.channels_last`` memory format.
    """

    def __init__(
        self,
        dataset: torch.utils.data.Dataset,
        *,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        num_workers: int = 2,
        device: str | torch.device = "cpu",
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
    ) -> None:
        self.dataset = dataset
        check_device_present(device)
        self.device = pick_device(device)  # "auto" as load_data and train choose
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), shuffle, drop_last
        self.seed, self.num_workers = int(seed), int(num_workers)
        self.rank, self.world_size = int(rank), int(world_size)
        self.channels_last = channels_last
        self._plan_batches(len(dataset))  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._pass(*self._start_pass())  # now, not at the first next(): iter() starts the pass

    def _pass(self, epoch: int, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of epoch ``epoch`` from batch ``start``; at the end the epoch advances."""
        order = epoch_permutation(self.num_samples, self.seed, epoch, self.shuffle).tolist()
        # Each sample's random transforms draw from a seed of (run seed, epoch, its position in the
        # epoch's order), not from a worker's stream: the same whatever the worker count, and the
        # same after a resume mid-epoch, which starts the workers at another batch.
        base = epoch_seed(self.seed, epoch, _AUGMENT_STREAM)
        batches = [[(order[k], (base * 1_000_033 + k) % (2**63 - 1)) for k in range(s, e)]
                   for s, e in self._slices[start:]]
        pin = self.device.type == "cuda"
        dl = torch.utils.data.DataLoader(
            _SeededSamples(self.dataset),
            batch_sampler=batches,
            num_workers=self.num_workers,
            pin_memory=pin,
            generator=torch.Generator().manual_seed(base),  # else the DataLoader draws its seed from torch's stream
        )
        for i, (x, y) in enumerate(dl, start=start):
            x = x.to(self.device, non_blocking=pin)
            y = y.to(self.device, torch.int64, non_blocking=pin)
            self.position = i + 1
            yield self._to_memory_format(x), y
        self.epoch, self.position = epoch + 1, 0
