"""`pipelined publish`: the pipeline state, live, in a room of a Yjs server (publish.py)."""

from __future__ import annotations

import signal
from pathlib import Path

import click

from pipelined.commands.common import load_config, read_conn, read_token, settings_options
from pipelined.config import LOG_FORMATS, LOG_LEVELS

__all__ = ["publish"]


@click.command()
@settings_options
@click.option("--server", "publish_server", default=None, metavar="URL",
              help="The room: ws://HOST:PORT/ROOM (or wss://) of a y-websocket server "
                   "(config: publish_server).")
@click.option("--token-file", "publish_token_file", type=click.Path(path_type=Path),
              default=None,
              help="File holding a bearer token the server needs (config: publish_token_file).")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default=None,
              help="Log format (default: console on a terminal, else JSON).")
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default=None,
              help="Log level (default info).")
def publish(root: Path | None, db: Path | None, stages: str | None, config_file: Path | None,
            publish_server: str | None, publish_token_file: Path | None,
            log_format: str | None, log_level: str | None) -> None:
    """Keep a room of a Yjs server equal to the pipeline, until stopped.

    Any server speaking the y-websocket protocol keeps the room (the Node
    @y/websocket-server, y/hub, y-sweet); browsers and Node apps follow it with
    plain Yjs. Read-only: changes other clients make in the room are
    overwritten. The document's shape: docs/publish.md.

    Example: pipelined publish --server ws://127.0.0.1:1234/pipeline
    """
    from pipelined.errors import ConfigError

    config = load_config(root, db, stages, config_file, publish_server=publish_server,
                         publish_token_file=publish_token_file, log_format=log_format,
                         log_level=log_level)
    if config.publish_server is None:
        raise ConfigError("publish_server", "",
                          "give --server ws://HOST:PORT/ROOM, or publish_server in the config")
    from websockets.exceptions import InvalidURI
    from websockets.uri import parse_uri

    try:
        parse_uri(config.publish_server)
    except (InvalidURI, ValueError) as exc:  # no host, a bad port or IPv6 address...
        raise ConfigError("publish_server", config.publish_server, str(exc)) from None
    token = (read_token(config.publish_token_file, min_length=1)
             if config.publish_token_file is not None else None)
    read_conn(config).close()  # a missing or foreign database: one line, before any network
    import anyio

    from pipelined.logs import configure_logging
    from pipelined.publish import Publisher

    configure_logging(config.log_format, config.log_level)
    publisher = Publisher(config.db_path, config.publish_server, token)

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(publisher.run)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _signal in signals:
                    tasks.cancel_scope.cancel()
                    break

    try:
        anyio.run(main)
    finally:
        publisher.close()
