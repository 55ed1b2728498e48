"""Writing a command's output files safely.

Every output is checked before any work starts (an existing file is kept unless the user asked to overwrite
it; a folder in its place is refused), and written through a temporary file in the same folder that then
replaces the output in one step (``os.replace``): an interrupted run never leaves half a file under an
output's name, and a symbolic link named like an output is replaced as a link, its target never written.
Values that JSON cannot hold (NaN, infinity) are stored as null and reported, so what was computed is
still written.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from bastion.errors import OutputError

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"
#: temporary files of earlier bastion versions (tempfile's default names) that runs folders may hold
_LEGACY_TEMP = re.compile(r"tmp[a-z0-9_]{8}\.tmp")


def atomic_write(path: Path, write: Callable[[Path], object], *, mode: int = 0o644) -> None:
    """Call ``write(tmp)`` on a new temporary file next to ``path``, then move it onto ``path`` in one step.

    ``path`` is never opened: a symbolic link there is replaced by the new file, its target left alone. The
    temporary file (``NAME.XXXX.tmp``) is removed if ``write`` fails; a killed process can leave it behind,
    and :func:`remove_stale_temps` cleans such files up.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, mode)  # mkstemp makes 0600; outputs are readable like any other file
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def remove_stale_temps(folder: Path, names: Iterable[str], *, legacy: bool = False) -> list[Path]:
    """Remove the temporary files an interrupted write of one of ``names`` left in ``folder`` (``NAME*.tmp``;
    with ``legacy``, also ``tmpXXXXXXXX.tmp`` from earlier versions). Returns what was removed."""
    if not folder.is_dir():
        return []
    patterns = tuple(names)
    removed = []
    for entry in folder.iterdir():
        name = entry.name
        ours = name.endswith(TEMP_SUFFIX) and any(name.startswith(p) and name != p for p in patterns)
        if (ours or (legacy and _LEGACY_TEMP.fullmatch(name))) and entry.is_file() and not entry.is_symlink():
            try:
                entry.unlink()
                removed.append(entry)
            except FileNotFoundError:  # another process cleaned it first
                pass
    if removed:
        log.info("removed %d unfinished temporary file(s) in %s: %s", len(removed), folder,
                 ", ".join(p.name for p in removed))
    return removed


def finite_json(obj: Any, *, indent: int | None = 2) -> tuple[str, list[str]]:
    """``obj`` as JSON text with every NaN or infinite number stored as null; returns the text and where
    those numbers were (``rows[3].l2_mean``), for a warning."""
    where: list[str] = []

    def clean(value: Any, path: str) -> Any:
        if not isinstance(value, (dict, list, tuple, str, int, float)) and callable(getattr(value, "item", None)):
            value = value.item()  # a numpy or torch scalar
        if isinstance(value, float) and not math.isfinite(value):
            where.append(path or "(the value)")
            return None
        if isinstance(value, dict):
            return {k: clean(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    return json.dumps(clean(obj, ""), indent=indent, allow_nan=False), where


def nonfinite_message(name: str, where: Sequence[str]) -> str:
    """The warning for :func:`finite_json`'s ``where``: a problem with the model, not with the file."""
    shown = ", ".join(where[:5]) + (f" and {len(where) - 5} more" if len(where) > 5 else "")
    return (f"{name}: {len(where)} value(s) were NaN or infinite and are stored as null ({shown}); the model gives "
            "non-finite outputs or losses, so check the model (its weights, mean and std)")


class OutputFolder:
    """The files one command writes into ``folder``, checked up front and written atomically.

    Args:
        folder: the output folder (created by :meth:`check`).
        names: the files the command writes there.
        overwrite: replace outputs an earlier run left (otherwise :meth:`check` refuses them).
    """

    def __init__(self, folder: str | os.PathLike[str], names: Sequence[str], *, overwrite: bool = False) -> None:
        self.folder = Path(folder)
        self.names = tuple(names)
        self.overwrite = overwrite

    def check(self, *, advice: str | None = None) -> OutputFolder:
        """Check the folder and every output before any work: a folder where a file goes is refused, and so is
        an existing output unless ``overwrite`` (``advice`` replaces the default way out). A folder that does not
        exist yet is only checked to be creatable: it is made by the first write, so a command that fails
        leaves no empty folder behind. Removes temporary files an interrupted earlier write left. Returns
        ``self``.

        Raises:
            OutputError: one line naming the folder and the output.
        """
        folder, opt = self.folder, "--out"
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"{opt} {folder} is an existing file, not a folder")
        if not folder.exists():
            _check_creatable(folder, opt)
            return self
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputError(f"{opt} {folder} is not writable")
        for name in self.names:
            path = folder / name
            if path.is_dir() and not path.is_symlink():
                raise OutputError(f"{path} is a folder where this command writes its {name}; remove or rename it, "
                                  f"or choose another {opt}")
        existing = [n for n in self.names if os.path.lexists(folder / n)]  # a link counts, even a dangling one
        if existing and not self.overwrite:
            links = [n for n in existing if (folder / n).is_symlink()]
            what = ", ".join(existing) + (f" ({', '.join(links)}: a symbolic link, which bastion replaces, never "
                                          "writing through it)" if links else "")
            raise OutputError(f"{folder} already holds {what} from an earlier run; "
                              + (advice or f"pass --overwrite or choose another {opt}"))
        remove_stale_temps(folder, self.names)
        return self

    def path(self, name: str) -> Path:
        if name not in self.names:
            raise ValueError(f"{name!r} is not one of this command's outputs {self.names}")
        return self.folder / name

    def write_with(self, name: str, write: Callable[[Path], object]) -> Path:
        """``write(tmp)`` fills a temporary file that then replaces the output ``name`` (for writers that take
        a path, such as ``safetensors.torch.save_file``)."""
        path = self.path(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot create --out {path.parent}: {e.strerror or e}") from None
        atomic_write(path, write)
        return path

    def write_bytes(self, name: str, data: bytes) -> Path:
        return self.write_with(name, lambda tmp: tmp.write_bytes(data))

    def write_text(self, name: str, text: str) -> Path:
        return self.write_with(name, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def write_json(self, name: str, obj: Any) -> list[str]:
        """Write ``obj`` as JSON, NaN and infinity stored as null; returns where such values were, for the
        caller to warn with :func:`nonfinite_message`."""
        text, where = finite_json(obj)
        self.write_text(name, text)
        return where


def _check_creatable(folder: Path, opt: str) -> None:
    """Raise unless ``folder`` (which does not exist) can be created: its nearest existing ancestor is a
    writable folder."""
    ancestor = folder.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"cannot create {opt} {folder}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"cannot create {opt} {folder}: {ancestor} is not writable")
