"""`new`, `move` and `init`: write story files and stage folders.

They change the folders only; a running daemon picks the change up like any
other edit.
"""

from __future__ import annotations

from pathlib import Path

import click

from pipelined.commands.common import (
    complete_stage,
    complete_story_id,
    echo_line,
    json_option,
    load_config,
    print_json,
    read_conn,
    settings_options,
)
from pipelined.schema import STORY_TYPES

__all__ = ["init", "move", "new"]

MOVE_WAIT_S = 10.0


@click.command()
@settings_options
@click.argument("title")
@click.option("--type", "story_type", type=click.Choice(STORY_TYPES), default="story",
              show_default=True, help="The kind of story; part of the file name.")
@click.option("--stage", default=None, shell_complete=complete_stage,
              help="Stage folder (default: the first stage).")
@click.option("--agent", default=None, help="Agent assigned to it.")
@click.option("--depends", default=None, help="Comma-separated story numbers or ids it needs.")
@click.option("--blocked", is_flag=True, help="Mark it blocked.")
@json_option
def new(root: Path | None, db: Path | None, stages: str | None, config_file: Path | None,
        title: str, story_type: str, stage: str | None, agent: str | None,
        depends: str | None, blocked: bool, as_json: bool) -> None:
    """Create a story file with a fresh number and front matter; print its id.

    The file is `<stage>/<number>_<type>_<slug>.md`, written atomically; the
    number is one past the highest ever seen (database and folders).

    Example: pipelined new "Export as CSV" --type story --agent coder-1 --depends 12,15
    """
    from pipelined.authoring import create_story

    config = load_config(root, db, stages, config_file)
    from pipelined.editing import parse_refs

    deps = parse_refs(depends) if depends else None
    high_water = 0
    if config.db_path.is_file():  # no database yet: the folders alone know the numbers
        from pipelined.store import queries

        high_water = queries.high_water(read_conn(config))
    made = create_story(config.root, config.stages, stage or config.stages[0], title,
                        story_type, agent=agent, blocked=blocked, depends_on=deps,
                        high_water=high_water)
    if as_json:
        print_json({"id": made.story_id, "path": str(made.path.absolute()),
                    "number": made.number, "stage": made.stage})
        return
    echo_line(made.story_id)


@click.command()
@settings_options
@click.argument("story_id", shell_complete=complete_story_id)
@click.argument("stage", shell_complete=complete_stage)
@click.option("--no-wait", is_flag=True,
              help="Do not wait for a running daemon to show the move in the database.")
@json_option
def move(root: Path | None, db: Path | None, stages: str | None, config_file: Path | None,
         story_id: str, stage: str, no_wait: bool, as_json: bool) -> None:
    """Move a story into another stage folder. ID may be just its number.

    With a daemon running, waits (up to 10 s) until the database shows the move.

    Example: pipelined move 12 2_current
    """
    from pipelined.authoring import move_story
    from pipelined.errors import SyncTimeout
    from pipelined.store.queries import confirmed_by_daemon, wait_for_stage

    config = load_config(root, db, stages, config_file)
    moved = move_story(config.root, config.stages, story_id, stage)
    synced = None if no_wait else confirmed_by_daemon(config.db_path, lambda: wait_for_stage(
        config.db_path, moved.story_id, moved.to_stage, MOVE_WAIT_S))
    if synced is False:
        raise SyncTimeout(f"moved {moved.story_id} to {moved.to_stage}", MOVE_WAIT_S)
    if as_json:
        print_json({"id": moved.story_id, "from_stage": moved.from_stage,
                    "to_stage": moved.to_stage, "path": str(moved.path.absolute()),
                    "synced": synced})
        return
    if moved.from_stage == moved.to_stage:
        echo_line(f"{moved.story_id} is already in {stage}")
    else:
        echo_line(f"moved {moved.story_id}: {moved.from_stage} -> {moved.to_stage}")


@click.command()
@click.argument("directory", type=click.Path(path_type=Path), default=".")
@click.option("--stages", default=None,
              help="Comma-separated stage folders to create (default 1_backlog,2_current,4_merge).")
@click.option("--example", is_flag=True, help="Also copy the example stories (stages-example/).")
@json_option
def init(directory: Path, stages: str | None, example: bool, as_json: bool) -> None:
    """Create the stage folders and a commented pipelined.toml in DIRECTORY.

    Existing folders and files are kept. The config sets `root`, so it works
    from anywhere with `--config DIRECTORY/pipelined.toml`.

    Example: pipelined init ~/work/stories --example
    """
    from dataclasses import asdict

    from pipelined.scaffold import init_root

    config = load_config(directory, None, stages, None)  # validates --stages like everywhere
    result = init_root(directory, config.stages, example=example)
    if as_json:
        print_json(asdict(result))
        return
    for rel in result.created:
        echo_line(f"created {rel}")
    for rel in result.kept:
        echo_line(f"kept    {rel}")
    echo_line(f"start the daemon: pipelined run --config {result.config}")
