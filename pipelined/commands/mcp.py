"""`pipelined mcp`: the MCP server over stdio, for agent clients (pipelined.mcp_server)."""

from __future__ import annotations

from pathlib import Path

import click

from pipelined.commands.common import load_config, read_conn, settings_options

__all__ = ["mcp_command"]


@click.command("mcp")
@settings_options
def mcp_command(root: Path | None, db: Path | None, stages: str | None,
                config_file: Path | None) -> None:
    """Serve the pipeline's tools to a coding agent over stdio (Model Context Protocol).

    The agent client starts this command; the root and the database are the
    ones given here (or by the environment and the config file), never guessed
    from the client. Reads need a database the daemon has built; writes edit
    the story files, which the daemon syncs.

    Example: pipelined mcp --root ~/project
    """
    from pipelined.layout import check_root
    from pipelined.mcp_server import build_server

    config = load_config(root, db, stages, config_file)
    check_root(config.root, config.stages)
    read_conn(config).close()  # no database, or not ours: one Error: line, before serving
    build_server(config).run("stdio")
