"""`pipelined serve`: the board, the HTTP API, the change stream and MCP over HTTP."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import click

from pipelined.commands.common import load_config, read_conn, read_token, settings_options

__all__ = ["serve"]

SYSTEMD_FIRST_FD = 3  # sd_listen_fds(3): the first socket systemd passes
# uvicorn's error for a response cut short, which is every open change stream
# when the server stops (sse-starlette ends them at shutdown): not an error then.
ENDED_AT_SHUTDOWN = "ASGI callable returned without completing response"


def _listen_address(text: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:8765` for IPv6) -> (host, port)."""
    from pipelined.errors import ConfigError

    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ConfigError("listen", text, "expected HOST:PORT, e.g. 127.0.0.1:8765")
    return host, int(port)


def _is_loopback(host: str) -> bool:
    from ipaddress import ip_address

    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def _socket(host: str, port: int) -> socket.socket:
    """The socket systemd passed (socket activation), else a new one bound here."""
    from pipelined.errors import ConfigError

    if os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS"):
        return socket.socket(fileno=SYSTEMD_FIRST_FD)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError("listen", f"{host}:{port}", f"cannot listen there ({exc.strerror})"
                          ) from None
    sock.listen(128)
    return sock


def _no_delay(sock: socket.socket) -> socket.socket:
    """TCP_NODELAY on the listening socket (accepted ones inherit it): a response
    written as headers then body must not wait for the client's delayed ACK (40 ms
    on every request of a kept-alive connection)."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@click.command()
@settings_options
@click.option("--listen", default="127.0.0.1:8765", show_default=True,
              help="HOST:PORT to listen on (port 0: any free port, printed at start).")
@click.option("--token-file", type=click.Path(path_type=Path), default=None,
              help="File holding the bearer token writes need (required beyond loopback).")
@click.option("--allow-host", multiple=True,
              help="Another Host header to answer (a name the server is reached by).")
def serve(root: Path | None, db: Path | None, stages: str | None, config_file: Path | None,
          listen: str, token_file: Path | None, allow_host: tuple[str, ...]) -> None:
    """Serve the live board at /, the HTTP API under /api, and MCP at /mcp.

    A separate process from the daemon: it reads the database read-only and
    writes only by editing story files, as `move` and `set` do.

    Example: pipelined serve --listen 127.0.0.1:8765
    """
    import logging

    import uvicorn

    from pipelined.errors import ConfigError
    from pipelined.layout import check_root
    from pipelined.logs import stdlib_handler
    from pipelined.web import build_app

    config = load_config(root, db, stages, config_file)
    host, port = _listen_address(listen)
    token = read_token(token_file) if token_file is not None else None
    check_root(config.root, config.stages)
    read_conn(config).close()  # no database, or not ours: one Error: line, before serving
    sock = _no_delay(_socket(host, port))
    host, port = sock.getsockname()[:2]  # systemd's socket may listen elsewhere
    if token is None and not _is_loopback(host):
        sock.close()
        raise ConfigError("listen", f"{host}:{port}", "listening beyond loopback needs "
                          "--token-file (writes would be open to the network)")
    names = {"127.0.0.1", "localhost", "[::1]", f"[{host}]" if ":" in host else host}
    hosts = {f"{name}:{port}" for name in names} | {
        h if ":" in h else f"{h}:{port}" for h in allow_host}
    origins = {f"http://{h}" for h in hosts} | {f"https://{h}" for h in hosts}
    # uvicorn's and the MCP SDK's lines: warnings and errors, one line each, at
    # their priority under journald (uvicorn's own setup is turned off below).
    handler = stdlib_handler()
    for name in ("uvicorn", "mcp"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.WARNING)
        logger.propagate = False
    app = build_app(config, hosts=hosts, origins=origins, token=token)
    shown = f"[{host}]" if ":" in host else host
    print(f"pipelined serve: http://{shown}:{port}/ (board), /api, /mcp", file=sys.stderr,
          flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False,
                                           lifespan="on", timeout_graceful_shutdown=5))
    handler.addFilter(lambda record: not (server.should_exit and record.getMessage().startswith(
        ENDED_AT_SHUTDOWN)))
    server.run(sockets=[sock])
