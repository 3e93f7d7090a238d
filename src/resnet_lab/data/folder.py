"""Image folders as they are found in the wild: one sub-folder per class (or ``train/`` and
``val/`` with one sub-folder per class inside), mixed modes and sizes, stray files.

Every file is opened once at scan time (header + ``Image.verify``); files that are not readable
images (text files, empty or corrupt files, broken symbolic links) are skipped and reported in one
warning. Symlinked folders are followed, each real folder once. Hidden files
(``.DS_Store``, ``._photo.jpg``, ``Thumbs.db``) are ignored silently. An image that passes the scan
but fails to decode later (a truncated JPEG) is warned about once and replaced by the next sample,
so a long run does not die in its tenth epoch.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from PIL import Image, UnidentifiedImageError

from .._text import user_stacklevel

__all__ = ["FolderScan", "ImageFileDataset", "scan_class_folders", "find_split_dirs", "BadImageWarning",
           "NoDecodableImageError", "display_name"]

_IGNORED = {"thumbs.db", "desktop.ini"}
TRAIN_NAMES = ("train", "training")
VAL_NAMES = ("val", "valid", "validation", "test")


class BadImageWarning(UserWarning):
    """Some files in an image folder could not be read and were skipped."""


class NoDecodableImageError(RuntimeError):
    """No image of an :class:`ImageFileDataset` can be decoded; the message names the folder.

    Raised in a DataLoader worker, it reaches the main process as this type again, but torch passes
    the worker's whole traceback as its message ("Caught ... in DataLoader worker process 0.
    Original Traceback ..."): the original message, its last line, is taken back out of it, so
    that the error still reads as one line.
    """

    def __init__(self, message: str) -> None:
        lines = message.rstrip().splitlines()
        prefix = f"{type(self).__module__}.{type(self).__qualname__}: "
        if len(lines) > 1 and lines[-1].startswith(prefix):  # torch's ExceptionWrapper.reraise
            message = lines[-1][len(prefix):]
        super().__init__(message)


@dataclass
class FolderScan:
    """The readable images of a class-per-folder tree.

    Attributes:
        root: the folder scanned.
        classes: class names (sub-folder names, sorted), index = label.
        samples: ``(path, label)`` of each readable image, sorted by class then file name.
        sizes: ``(width, height)`` of each sample, from the file header.
        bad: ``(path, reason)`` of each skipped file.
    """

    root: Path
    classes: list[str]
    samples: list[tuple[str, int]]
    sizes: list[tuple[int, int]]
    bad: list[tuple[str, str]]


def display_name(name: str) -> str:
    """``name`` as figures and printed text can show it. A folder name that is not valid UTF-8
    (``b"b\\xe9"``, Latin-1 on a UTF-8 system) reaches Python with each undecodable byte as a lone
    surrogate (``os.fsdecode``: ``"b\\udce9"``), which matplotlib refuses and a UTF-8 stdout cannot
    encode; here each such byte becomes U+FFFD, as a UTF-8 terminal shows it. The class keeps its
    real name (the folder's) everywhere else: ``model.json``, JSON output, the data it is read from."""
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte (one read from JSON, say)
        return name.encode("utf-8", "replace").decode("utf-8")


def _check_image(path: Path) -> tuple[tuple[int, int] | None, str]:
    try:
        if path.stat().st_size == 0:
            return None, "empty file"
        with Image.open(path) as im:
            size = im.size
            im.verify()  # reads the data stream where the format allows (PNG CRCs) without decoding
        return size, ""
    except UnidentifiedImageError:
        return None, "not an image"
    except Exception as e:  # PIL raises many types for damaged files (SyntaxError, OSError, ...)
        if isinstance(e, OSError) and e.errno is not None:  # the file system's error, not the decoder's
            if path.is_symlink() and not path.exists():  # dangling, or a cycle of links
                return None, f"broken symbolic link to {os.readlink(path)}"
            return None, f"cannot read ({e.strerror or e})"
        return None, f"corrupt ({type(e).__name__}: {e})"


def _hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in _IGNORED


def _files_below(folder: Path) -> Iterator[Path]:
    """Every non-hidden file below ``folder``, sorted folder by folder, following symlinked folders
    (a link to photos kept elsewhere counts) but entering each real folder once: a link to a folder
    above it, or two links to one folder, would otherwise loop forever or count its images twice."""
    seen = {os.path.realpath(folder)}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        keep = []
        for d in sorted(dirnames):
            real = os.path.realpath(os.path.join(dirpath, d))
            if not _hidden(d) and real not in seen:
                seen.add(real)
                keep.append(d)
        dirnames[:] = keep
        yield from (Path(dirpath) / fn for fn in sorted(filenames) if not _hidden(fn))


def _warn_loose_images(root: Path) -> None:
    """Warn once about images lying directly in ``root`` beside its class folders: they have no class,
    so they are not used, which a user who put them there expects least. Told by their extension (no
    file is opened); other files (a README) are no concern."""
    images = Image.registered_extensions()
    loose = sorted(p.name for p in root.iterdir()
                   if not _hidden(p.name) and p.suffix.lower() in images and p.is_file())
    if loose:
        warnings.warn(f"{len(loose)} image(s) directly in {root} are not in a class folder and are not used, e.g. "
                      f"{loose[0]!r}; move them into {root}/<class>/ to train on them", stacklevel=user_stacklevel())


def scan_class_folders(root: str | os.PathLike, classes: list[str] | None = None) -> FolderScan:
    """Scan ``root/<class>/**/<image>``.

    Args:
        root: folder with one sub-folder per class.
        classes: the expected class list (e.g. the train split's for a val split); folders
            outside it are an error; classes absent here are allowed.

    Raises:
        FileNotFoundError: ``root`` is missing.
        NotADirectoryError: ``root`` is a file.
        ValueError: no class sub-folders, a class folder without readable images, or a val class
            the train split does not have.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(
            f"image folder {root} is a file, not a folder; pass --data-dir DIR with one sub-folder per class"
        )
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist; pass --data-dir with one sub-folder per class")
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not _hidden(d.name))
    if not found:
        loose = [p.name for p in root.iterdir() if p.is_file() and not _hidden(p.name)][:3]
        hint = f" (it holds files like {loose}; move them into one sub-folder per class)" if loose else ""
        raise ValueError(
            f"image folder {root} has no class sub-folders{hint}; expected {root}/<class>/<image> "
            f"or {root}/train/<class>/<image> and {root}/val/<class>/<image>"
        )
    _warn_loose_images(root)
    if classes is None:
        classes = found
    else:
        extra = sorted(set(found) - set(classes))
        if extra:
            raise ValueError(
                f"{root} has class folders {extra} that the training split does not have "
                f"(training classes: {classes}); rename or remove them"
            )
    index = {c: i for i, c in enumerate(classes)}
    samples: list[tuple[str, int]] = []
    sizes: list[tuple[int, int]] = []
    bad: list[tuple[str, str]] = []
    empty: list[str] = []
    owner: dict[str, tuple[str, Path]] = {}  # real path -> the class and path it was first found under
    twice: list[tuple[Path, str, Path, str]] = []
    for name in found:
        n_before = len(samples)
        for p in _files_below(root / name):
            real = os.path.realpath(p)
            if real in owner:  # a link to a file, or a folder linked from elsewhere: one image, one sample
                if owner[real][0] != name:  # and one label: a link across classes would teach it two
                    twice.append((*owner[real][::-1], p, name))
                continue
            owner[real] = (name, p)
            size, why = _check_image(p)
            if size is None:
                bad.append((str(p), why))
            else:
                samples.append((str(p), index[name]))
                sizes.append(size)
        if len(samples) == n_before:
            empty.append(name)
    if bad:  # one line, each name quoted whole: "bad  two  spaces.png" keeps its spaces, a newline shows as \n
        shown = "; ".join(f"{p!r} ({why})" for p, why in bad)
        warnings.warn(f"skipped {len(bad)} unreadable file(s) in {root}: {shown}", BadImageWarning, stacklevel=user_stacklevel())
    if twice:
        first_path, first, p, second = twice[0]
        raise ValueError(
            f"{len(twice)} image(s) in {root} are in two classes through symbolic links, e.g. {first_path} (class "
            f"{first!r}) and {p} (class {second!r}) are one file, {os.path.realpath(p)}: one image cannot have two "
            "labels (and would be tested on what it trained on); remove the link(s) that lead out of a class folder"
        )
    if empty:
        raise ValueError(
            f"class folder(s) {empty} in {root} contain no readable images; add images or remove the folder(s)"
        )
    return FolderScan(root=root, classes=list(classes), samples=samples, sizes=sizes, bad=bad)


def holds_out(root: str | os.PathLike | None) -> bool:
    """Whether a dataset folder has no val/ folder, so that its test split is held out of it (False
    too where it cannot be read: loading it says why)."""
    try:
        return root is not None and find_split_dirs(Path(root).expanduser())[1] is None
    except (OSError, ValueError):
        return False


def find_split_dirs(root: str | os.PathLike) -> tuple[Path, Path | None]:
    """Return ``(train_dir, val_dir)`` if ``root`` has a train/val layout, else ``(root, None)``.

    Args:
        root: the dataset folder. ``train``/``training`` and ``val``/``valid``/``validation``/``test``
            sub-folders mark the split layout.
    """
    root = Path(root)
    subdirs = {d.name.lower(): d for d in root.iterdir() if d.is_dir()} if root.is_dir() else {}
    train = next((subdirs[n] for n in TRAIN_NAMES if n in subdirs), None)
    val = next((subdirs[n] for n in VAL_NAMES if n in subdirs), None)
    if train is not None and val is not None:
        unused = [subdirs[n].name for n in VAL_NAMES if n in subdirs and subdirs[n] is not val]
        if unused:  # a test/ beside val/: say which one the test split is, rather than skip it silently
            warnings.warn(f"{root}: {val.name}/ is the test split; {', '.join(f'{u}/' for u in unused)} "
                          f"{'is' if len(unused) == 1 else 'are'} not used (evaluate a run on it with "
                          f"--data-dir pointing at a folder whose val/ it is)", stacklevel=user_stacklevel())
        return train, val
    if train is not None or val is not None:
        raise ValueError(_half_split(root, train, val))
    return root, None


def _half_split(root: Path, train: Path | None, val: Path | None) -> str:
    """Why a folder with only one of train/ and val/ is refused, naming the folder it has (often a
    class that happens to be called ``test`` or ``train``) and both ways out."""
    if train is None:
        return (f"{root} has a {val.name}/ folder but no train/ folder, so it reads as a split without its training "
                f"half: if {val.name} is a class, rename the class folder {val.name}/ (e.g. {val.name}_); if it "
                f"is the test split, put the training images in {root}/train/<class>/ beside it")
    return (f"{root} has a {train.name}/ folder but no val/ (valid/, validation/, test/) folder, so it reads as a split "
            f"without its test half: if {train.name} is a class, rename the class folder {train.name}/ (e.g. "
            f"{train.name}_); if it is the training split, put the test images in {root}/val/<class>/ beside it, or "
            f"move its class folders up into {root} to hold out a share of each (--val-fraction)")


class ImageFileDataset(torch.utils.data.Dataset):
    """Decode image files with a transform; an undecodable file is warned about once and replaced
    by the next sample.

    Args:
        samples: ``(path, label)`` pairs.
        transform: PIL image -> tensor.
    """

    def __init__(self, samples: list[tuple[str, int]], transform: Callable[[Image.Image], torch.Tensor]) -> None:
        if not samples:
            raise ValueError("ImageFileDataset needs at least one sample")
        self.samples = samples
        self.transform = transform
        # Which samples were warned about, in shared memory: each epoch's worker processes start
        # from a copy of this dataset, so a plain set would warn again in every epoch.
        self._warned = torch.zeros(len(samples), dtype=torch.bool).share_memory_()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        for k in range(len(self.samples)):
            j = (i + k) % len(self.samples)
            path, label = self.samples[j]
            try:
                with Image.open(path) as im:
                    im.load()
                    return self.transform(im), label
            except Exception as e:  # truncated/corrupt data found only when decoding
                if not bool(self._warned[j]):
                    self._warned[j] = True
                    warnings.warn(f"cannot decode {path} ({e}); using the next image instead", BadImageWarning)
                last = (path, e)
        folder = os.path.commonpath([os.path.dirname(p) for p, _ in self.samples])
        raise NoDecodableImageError(
            f"no image in {folder} can be decoded ({len(self.samples)} tried; e.g. {last[0]}: {last[1]}): check that "
            "the files open in an image viewer, and convert the ones that do not (re-save them as PNG) or remove them"
        )
