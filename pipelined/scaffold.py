"""`pipelined init`: stage folders, a commented config, optionally the example stories.

Creates, never overwrites: an existing folder, config or story file is kept
and reported as such, so `init` is safe to run again on a live root.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipelined.errors import RootError

__all__ = ["CONFIG_NAME", "InitResult", "example_folder", "init_root", "sample_config"]

CONFIG_NAME = "pipelined.toml"


@dataclass
class InitResult:
    """What `init` made (paths relative to the root) and what it found already there."""

    root: str
    config: str
    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def example_folder() -> Path:
    """`stages-example/`: inside the wheel as `pipelined/stages_example`, else the checkout's."""
    packaged = Path(__file__).resolve().parent / "stages_example"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[1] / "stages-example"


def sample_config() -> str:
    return (Path(__file__).resolve().parent / "config.sample.toml").read_text(encoding="utf-8")


def _config_text(root: Path, stages: Sequence[str]) -> str:
    """The sample with `root = "."` (the file's own folder, wherever the folder is
    copied or cloned) and `stages` set: usable from anywhere via --config."""
    del root  # the file's folder: paths in a config file are relative to it
    text = sample_config()
    text = re.sub(r"^# root = .*$", 'root = "."  # this file\'s folder', text, count=1,
                  flags=re.MULTILINE)
    return re.sub(r"^stages = .*$", f"stages = {json.dumps(list(stages))}", text, count=1,
                  flags=re.MULTILINE)


def init_root(root: Path, stages: Sequence[str], example: bool = False) -> InitResult:
    """Create root, its stage folders with a `.gitkeep`, `pipelined.toml`, and examples."""
    root = root.expanduser().absolute()
    result = InitResult(root=str(root), config=str(root / CONFIG_NAME))
    try:
        root.mkdir(parents=True, exist_ok=True)
        for stage in stages:
            _make(root / stage, root, result)
            keep = root / stage / ".gitkeep"
            if not keep.exists():
                keep.touch()
        config = root / CONFIG_NAME
        if config.exists():
            result.kept.append(CONFIG_NAME)
        else:
            _write_new(config, _config_text(root, stages))
            result.created.append(CONFIG_NAME)
        if example:
            _copy_examples(root, stages, result)
    except OSError as exc:
        raise RootError(Path(exc.filename or root), f"cannot create it ({exc.strerror})") from None
    return result


def _make(folder: Path, root: Path, result: InitResult) -> None:
    rel = str(folder.relative_to(root)) + "/"
    if folder.is_dir():
        result.kept.append(rel)
    else:
        folder.mkdir()
        result.created.append(rel)


def _write_new(path: Path, text: str) -> None:
    with open(path, "x", encoding="utf-8") as out:  # "x": never clobber a file made meanwhile
        out.write(text)


def _copy_examples(root: Path, stages: Sequence[str], result: InitResult) -> None:
    source = example_folder()
    if not source.is_dir():
        raise RootError(source, "the example stories are not installed")
    for stage_dir in sorted(p for p in source.iterdir() if p.is_dir()):
        if stage_dir.name not in stages:
            _make(root / stage_dir.name, root, result)
        for story in sorted(stage_dir.glob("*.md")):
            target = root / stage_dir.name / story.name
            rel = f"{stage_dir.name}/{story.name}"
            if target.exists():
                result.kept.append(rel)
                continue
            temp = target.with_name(f".{story.name}.{os.getpid()}.tmp")
            shutil.copyfile(story, temp)
            try:
                os.link(temp, target)
                result.created.append(rel)
            except FileExistsError:
                result.kept.append(rel)
            finally:
                temp.unlink(missing_ok=True)
