"""Output folders that are never overwritten silently (every tool that writes a folder).

``prepare_output_dir`` is the one rule: a non-empty ``--out`` is refused unless ``--overwrite``,
which replaces the folder whole (no stale file from an earlier output survives); an ``--out`` that
names a file, or that equals, lies inside or contains one of the tool's inputs, is refused before
anything is written.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from flexbert.errors import FlexBertError

PathLike = Union[str, "os.PathLike[str]"]


class OutputError(FlexBertError, ValueError):
    """An output folder that cannot be written as asked (one line)."""


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_output_dir(out: PathLike, inputs: Iterable[Optional[PathLike]] = (), what: str = "--out",
                     keep: Iterable[Optional[PathLike]] = ()) -> Path:
    """The resolved output path after the checks that need nothing written (a file, an input).
    ``keep``: folders the output may lie inside but must not be or contain (a run folder: its
    export may go to RUN/hf, never to RUN itself)."""
    path = Path(os.path.realpath(os.fspath(out)))
    for given in keep:
        if given is not None and "://" not in os.fspath(given) and _inside(Path(os.path.realpath(os.fspath(given))), path):
            where = "is" if path == Path(os.path.realpath(os.fspath(given))) else "contains"
            raise OutputError(f"{what} {out} {where} the run folder {given}: write the output somewhere else")
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {out}: exists and is not a folder")
    for given in inputs:
        if given is None or "://" in os.fspath(given):
            continue
        src = Path(os.path.realpath(os.fspath(given)))
        if _inside(path, src) or _inside(src, path):
            where = "is" if path == src else ("lies inside" if _inside(path, src) else "contains")
            raise OutputError(f"{what} {out} {where} the input {given}: write the output somewhere else")
    if path in (Path("/"), Path(os.path.realpath(os.path.expanduser("~")))) or _inside(Path(os.getcwd()).resolve(), path):
        raise OutputError(f"{what} {out}: refusing to write over this folder (it holds the working directory or home)")
    return path


def prepare_output_dir(out: PathLike, *, overwrite: bool = False, inputs: Iterable[Optional[PathLike]] = (),
                       what: str = "--out", keep: Iterable[Optional[PathLike]] = ()) -> Path:
    """Create ``out`` empty and return it: refuse a file, an input (or a folder holding one), a
    ``keep`` folder or one holding it, and a non-empty folder unless ``overwrite`` (then the folder
    is removed whole first)."""
    path = check_output_dir(out, inputs, what, keep)
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise OutputError(f"{what} {out}: folder is not empty; pass --overwrite to replace it "
                              "(its contents are deleted)")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json(path: str, obj: Any) -> None:
    """Write ``obj`` as JSON atomically (a temporary file renamed over ``path``)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
