# Copyright (c) monai_tfm contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""
Atomic file writing.

A reader never sees a half-written file: content goes to a temporary file in the destination folder (same
file system), is flushed to disk and then renamed onto the destination in one step (``os.replace``). When
``overwrite=False`` the final step is a hard link, which fails atomically if the destination already exists,
so two writers racing for the same path cannot silently clobber each other.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import torch
from monai.config import PathLike

from monai_tfm.utils.errors import MonaiTFMError
from monai_tfm.utils.options import as_bool

__all__ = [
    "atomic_path",
    "atomic_save_nifti",
    "atomic_save_torch",
    "atomic_write",
    "atomic_write_text",
    "check_files_free",
    "check_outputs_free",
]

logger = logging.getLogger(__name__)


def _temp_sibling(path: Path) -> Path:
    """Return an unused temporary path next to ``path`` that keeps its file name (and so its suffixes).

    Keeping the full name at the end (``.tmp-<token>-frame.nii.gz``) lets writers that pick the format from
    the extension (nibabel, ``torch.save`` does not care) work on the temporary file.
    """
    return path.with_name(f".tmp-{uuid.uuid4().hex[:12]}-{path.name}")


def _fsync_dir(folder: Path) -> None:
    """Flush a directory entry to disk where the platform allows it (best effort)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _commit(tmp: Path, path: Path, overwrite: bool) -> None:
    """Move the finished temporary file ``tmp`` onto ``path``.

    Raises:
        FileExistsError: if ``overwrite`` is False and ``path`` exists.
    """
    if overwrite:
        os.replace(tmp, path)
    else:
        try:
            os.link(tmp, path)  # atomic "create if absent"
        except FileExistsError:
            raise FileExistsError(f"refusing to overwrite existing file '{path}' (pass overwrite=True).") from None
        except OSError:
            # hard links unsupported on this file system: check then rename (tiny race window)
            if path.exists():
                raise FileExistsError(f"refusing to overwrite existing file '{path}' (pass overwrite=True).") from None
            os.replace(tmp, path)
        else:
            tmp.unlink()
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path: PathLike, overwrite: bool = True, make_parents: bool = True) -> Iterator[Path]:
    """Context manager giving a temporary path to write; it is moved onto ``path`` when the block succeeds.

    Use it with libraries that write to a file name themselves (``nibabel.save``, ``np.save``, ``torch.save``).
    The temporary name ends with the destination's file name, so extension-based format detection works.
    If the block raises, the temporary file is deleted and ``path`` is left untouched.

    Example::

        with atomic_path("out/frame_00.nii.gz") as tmp:
            nibabel.save(img, tmp)

    Args:
        path: the destination file.
        overwrite: if False, raise instead of replacing an existing destination (checked before the block
            and again, atomically, when committing).
        make_parents: create the destination folder if missing.

    Yields:
        the temporary path to write.

    Raises:
        FileExistsError: if ``overwrite`` is False and ``path`` exists.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"refusing to overwrite existing file '{path}' (pass overwrite=True).")
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file for '{path}'.")
        _commit(tmp, path, overwrite)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_write(
    path: PathLike,
    mode: str = "w",
    overwrite: bool = True,
    encoding: str | None = None,
    make_parents: bool = True,
) -> Iterator[IO[Any]]:
    """Context manager giving an open file handle whose content replaces ``path`` atomically on success.

    The data are flushed and fsync'ed before the rename. If the block raises, the destination is untouched.

    Example::

        with atomic_write("out/table.csv", "w", encoding="utf-8") as f:
            f.write("a,b\\n")

    Args:
        path: the destination file.
        mode: ``"w"`` (text) or ``"wb"`` (binary); ``"x"`` modes are mapped to ``overwrite=False``.
        overwrite: if False, raise instead of replacing an existing destination.
        encoding: text encoding (text mode only; defaults to UTF-8).
        make_parents: create the destination folder if missing.

    Yields:
        the open file object.

    Raises:
        ValueError: for a mode that is not a write mode.
        FileExistsError: if ``overwrite`` is False and ``path`` exists.
    """
    if mode not in ("w", "wb", "wt", "x", "xb", "xt"):
        raise MonaiTFMError(f"atomic_write supports modes 'w', 'wb', 'x', 'xb', got {mode!r}.")
    if mode.startswith("x"):
        overwrite, mode = False, "w" + mode[1:]
    binary = "b" in mode
    if binary and encoding is not None:
        raise MonaiTFMError("encoding is only valid in text mode.")
    with (
        atomic_path(path, overwrite=overwrite, make_parents=make_parents) as tmp,
        open(tmp, mode, encoding=None if binary else (encoding or "utf-8")) as f,
    ):
        yield f
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: PathLike, text: str, overwrite: bool = False, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically.

    Args:
        path: the destination file.
        text: the content.
        overwrite: replace an existing file (default False: raise instead).
        encoding: text encoding.

    Returns:
        the destination path.

    Raises:
        FileExistsError: if ``overwrite`` is False and ``path`` exists.
    """
    with atomic_write(path, "w", overwrite=overwrite, encoding=encoding) as f:
        f.write(text)
    return Path(path)


def atomic_save_torch(obj: Any, path: PathLike, overwrite: bool = True) -> Path:
    """``torch.save`` to ``path`` atomically, so an interrupted save never leaves a truncated checkpoint.

    Args:
        obj: the object to save (for shareable checkpoints, tensors and plain containers only, so that
            ``torch.load(..., weights_only=True)`` can read it).
        path: the destination file.
        overwrite: replace an existing file (default True, as for checkpoints saved every epoch).

    Returns:
        the destination path.

    Raises:
        FileExistsError: if ``overwrite`` is False and ``path`` exists.
    """
    with atomic_write(path, "wb", overwrite=overwrite) as f:
        torch.save(obj, f)
    return Path(path)


def atomic_save_nifti(array: Any, affine: Any, path: PathLike, overwrite: bool = True) -> Path:
    """Write a NIfTI image atomically, with the affine as both qform and sform and millimetre units.

    Args:
        array: voxel array (numpy).
        affine: 4x4 voxel-to-world matrix.
        path: destination (``.nii`` or ``.nii.gz``).
        overwrite: whether an existing file may be replaced.

    Returns:
        the destination path.
    """
    import nibabel as nib
    import numpy as np

    affine = np.asarray(affine, dtype=np.float64)
    img = nib.Nifti1Image(np.asarray(array), affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_path(path, overwrite=overwrite) as tmp:
        nib.save(img, tmp)
    return Path(path)


def check_outputs_free(
    folder: PathLike, names: Sequence[str] | None = None, overwrite: bool | str = False, what: str = "outputs"
) -> None:
    """Refuse, before any work starts, to write into ``folder`` where earlier outputs would be replaced.

    Args:
        folder: output folder (it need not exist).
        names: the file names the job writes there; ``None``: any file in the folder counts as an earlier output.
        overwrite: replace them (a switch: a bool or ``true``/``false``, see :func:`monai_tfm.utils.as_bool`).
        what: what the files are, for the message (``"evaluation report"``, ``"forecasts"``).

    Raises:
        ValueError: ``overwrite`` is not a boolean switch value.
        FileExistsError: an earlier output exists and ``overwrite`` is false; the message names one.
    """
    if as_bool(overwrite, "overwrite") or not Path(folder).is_dir():
        return
    folder = Path(folder)
    found = [folder / n for n in names if (folder / n).exists()] if names else sorted(folder.iterdir())
    if found:
        raise FileExistsError(
            f"{folder} already holds {what} ({found[0].name}); pass --overwrite true to replace them or choose "
            "another output folder."
        )


def check_files_free(
    paths: Iterable[PathLike | None], overwrite: bool, error: type[Exception] = MonaiTFMError, hint: str = ""
) -> None:
    """Refuse, before any work starts, output files that are folders or that exist (unless ``overwrite``).

    The file-by-file sibling of :func:`check_outputs_free`, for commands that name each output (``monai-tfm
    forecast``, ``monai-tfm generate``).

    Args:
        paths: the output files (``None`` entries are skipped).
        overwrite: replace existing files.
        error: the exception class to raise.
        hint: appended to the message about an existing file (e.g. ``" or choose another --output"``).

    Raises:
        error: an output is a folder, or exists and ``overwrite`` is false; the message names it.
    """
    for path in paths:
        if path is None:
            continue
        path = Path(path)
        if path.is_dir():
            raise error(f"output '{path}' is a folder; give a file name.")
        if path.exists() and not overwrite:
            raise error(f"output '{path}' exists; pass --overwrite to replace it{hint}.")
