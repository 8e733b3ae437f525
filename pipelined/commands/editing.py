"""`set`, `claim`, `edit`: change a story's fields by editing its file (pipelined.editing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pipelined.commands.common import (
    complete_story_id,
    echo_line,
    json_option,
    load_config,
    print_json,
    settings_options,
)
from pipelined.terminal import field_text

__all__ = ["claim", "edit", "set_command"]

SYNC_WAIT_S = 10.0


def _synced(config: Any, edited: Any, no_wait: bool) -> bool | None:
    """With a daemon running: whether it showed the edit in the database in time
    (SyncTimeout if not); None when no daemon runs or nothing changed."""
    from pipelined.errors import SyncTimeout
    from pipelined.store.queries import confirmed_by_daemon, wait_for_fields

    if no_wait or not edited.changed:
        return None
    fields = {name: edited.after[name] for name in edited.changed}
    synced = confirmed_by_daemon(config.db_path, lambda: wait_for_fields(
        config.db_path, edited.story_id, fields, SYNC_WAIT_S))
    if synced is False:
        raise SyncTimeout(f"edited {edited.story_id}", SYNC_WAIT_S)
    return synced


def _report(edited: Any, synced: bool | None, as_json: bool) -> None:
    from pipelined.schema import from_column

    if as_json:
        print_json({"id": edited.story_id, "path": str(edited.path.absolute()),
                    "changed": list(edited.changed),
                    "fields": {k: from_column(k, v) for k, v in edited.after.items()},
                    "synced": synced})
    elif not edited.changed:
        echo_line(f"{edited.story_id}: nothing to change")
    else:
        echo_line(f"{edited.story_id}: " + ", ".join(
            f"{name} {field_text(from_column(name, edited.before.get(name)))} -> "
            f"{field_text(from_column(name, edited.after[name]))}" for name in edited.changed))


@click.command("set")
@settings_options
@click.argument("story_id", shell_complete=complete_story_id)
@click.argument("assignments", nargs=-1, required=True)
@click.option("--no-wait", is_flag=True,
              help="Do not wait for a running daemon to show the edit in the database.")
@json_option
def set_command(root: Path | None, db: Path | None, stages: str | None,
                config_file: Path | None, story_id: str, assignments: tuple[str, ...],
                no_wait: bool, as_json: bool) -> None:
    """Set fields of a story: FIELD=VALUE ... (an empty VALUE clears it).

    Only each field's own front-matter line changes (or is added); every other
    byte of the file stays. Fields: name, agent, retry_count (a number),
    blocked (true/false), depends_on (comma-separated numbers or ids).

    Example: pipelined set 12 agent=coder-2 blocked=false depends_on=10,11
    """
    from pipelined.editing import parse_assignment, update_story

    config = load_config(root, db, stages, config_file)
    changes = dict(parse_assignment(text) for text in assignments)
    edited = update_story(config.root, config.stages, story_id, changes,
                          max_bytes=config.max_file_bytes)
    _report(edited, _synced(config, edited, no_wait), as_json)


@click.command()
@settings_options
@click.argument("story_id", shell_complete=complete_story_id)
@click.argument("agent")
@click.option("--no-wait", is_flag=True,
              help="Do not wait for a running daemon to show the claim in the database.")
@json_option
def claim(root: Path | None, db: Path | None, stages: str | None, config_file: Path | None,
          story_id: str, agent: str, no_wait: bool, as_json: bool) -> None:
    """Set a story's agent to AGENT, only if it has none (or already has AGENT).

    Of several claims at once exactly one wins; the others fail with
    "claimed by ...".

    Example: pipelined claim 12 coder-2
    """
    from pipelined.editing import claim_story

    config = load_config(root, db, stages, config_file)
    edited = claim_story(config.root, config.stages, story_id, agent,
                         max_bytes=config.max_file_bytes)
    _report(edited, _synced(config, edited, no_wait), as_json)


@click.command()
@settings_options
@click.argument("story_id", shell_complete=complete_story_id)
def edit(root: Path | None, db: Path | None, stages: str | None, config_file: Path | None,
         story_id: str) -> None:
    """Open a story's file in $VISUAL or $EDITOR (default vi); the daemon syncs the save.

    Example: pipelined edit 12
    """
    import os
    import shlex
    import subprocess

    from pipelined.authoring import find_story_file
    from pipelined.errors import RootError

    config = load_config(root, db, stages, config_file)
    stage, found = find_story_file(config.root, config.stages, story_id)
    path = config.root / stage / f"{found}.md"
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    try:
        command = [*shlex.split(editor), str(path)]
        status = subprocess.call(command)
    except (OSError, ValueError) as exc:
        raise RootError(path, f"cannot start the editor {editor!r} ({exc})") from None
    if status != 0:
        raise RootError(path, f"the editor {editor!r} exited with status {status}")
