"""``python -m server``: run the HTTP (SSE) and websocket server on one port.

``python -m server preload`` loads the model into Ollama with the server's own
load-time options and exits: 0 once it is warm, 1 if it is not within ``--wait`` (or
at once when Ollama does not have the model).

``python -m server vapi-assistant`` prints a VAPI assistant (JSON) pointing at this server.

Each has its own ``--help``; a bad flag or setting is one line on stderr and exit
status 2, a port that cannot be listened on one line and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from types import FrameType

import ollama
import uvicorn

from .config import Config, ConfigError, config_from, settings_parser
from .core.backend import CONTROL_ERRORS, Backend
from .core.engine import Engine
from .doors.http import App
from .doors.protocol import WebSocketProtocol, http_protocol
from .doors.vapi import vapi_assistant
from .ops import pauses
from .ops.logs import log_ready, setup_logging

log = logging.getLogger("server")

_COMMANDS = """\
subcommands (each has its own --help):
  python -m server preload         load the model into Ollama with these settings, then exit
  python -m server vapi-assistant  print a VAPI assistant (JSON) whose model is this server
"""


def build_app(config: Config) -> App:
    """The ASGI application for a configuration, with its engine."""
    return App(config, Engine(config))


class ListenError(Exception):
    """A port the server cannot listen on; the message says which and why."""


def listen(host: str, port: int, setting: str) -> socket.socket:
    """A socket bound to ``host:port``, as uvicorn binds one.

    Raises :class:`ListenError` naming the address and ``setting`` when it cannot.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = exc.strerror or str(exc)
        raise ListenError(f"cannot listen on {host}:{port} ({setting}): {why}") from None
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, with a summary line once it listens; a SIGTERM drain exits 0.

    uvicorn re-raises the signal after shutting down, so the process would die of
    SIGTERM; for a container, a completed drain is a clean exit.
    """

    def __init__(self, config: uvicorn.Config, settings: Config, ports: list[int]) -> None:
        super().__init__(config)
        self.settings = settings
        self.ports = ports

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            pauses.freeze_startup()
            log_ready(self.settings, "server", host=self.settings.host, ports=self.ports)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM:
            self.should_exit = True
        else:
            super().handle_exit(sig, frame)


def serve(config: Config, app: App, sockets: list[socket.socket]) -> int:
    """Serve ``app`` on ``sockets`` until stopped."""
    if config.api_key is None and not config.loopback:
        log.warning(
            "!!! NO API KEY: listening on %s without --api-key / API_KEY: anyone who can reach "
            "this port can use the model. Set API_KEY. !!!",
            config.host,
        )
    pauses.watch()
    server = _Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            loop="uvloop",
            http=http_protocol(config.read_timeout),
            ws=WebSocketProtocol,
            ws_per_message_deflate=False,
            ws_max_size=config.max_body_bytes,
            lifespan="on",
            access_log=False,
            log_config=None,  # setup_logging has routed uvicorn's loggers
            server_header=False,
            limit_concurrency=config.max_connections,
            timeout_graceful_shutdown=config.shutdown_timeout,
        ),
        config,
        [sock.getsockname()[1] for sock in sockets],
    )
    server.run(sockets=sockets)
    return 0


def _serve_command(argv: Sequence[str]) -> int:
    parser = settings_parser(env=os.environ)
    parser.usage = "%(prog)s [options]\n       %(prog)s {preload,vapi-assistant} ..."
    parser.epilog = _COMMANDS
    args = parser.parse_args(argv)
    try:
        config = config_from(args, os.environ)
        setup_logging(config)
        sockets = [listen(config.host, config.port, "--port/PORT")]
        if config.health_port is not None and config.health_port != config.port:
            # RunPod may probe /ping on its own port; the same app answers there.
            sockets.append(listen(config.host, config.health_port, "--health-port/PORT_HEALTH"))
        app = build_app(config)
    except ConfigError as exc:
        print(f"python -m server: error: {exc}", file=sys.stderr)
        return 2
    except ListenError as exc:
        print(f"python -m server: error: {exc}", file=sys.stderr)
        return 1
    return serve(config, app, sockets)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above zero")
    return value


async def preload(config: Config, wait: float) -> str | None:
    """Load the model on every Ollama, retrying for up to ``wait`` seconds.

    Returns why it failed, or None. A model that Ollama answers 404 for fails at once:
    retrying cannot pull it.
    """
    engine = Engine(config)
    try:
        several = len(engine.backends) > 1
        problems = await asyncio.gather(*(_preload(b, wait, several) for b in engine.backends))
    finally:
        await engine.close()
    return "; ".join(problem for problem in problems if problem) or None


async def _preload(backend: Backend, wait: float, several: bool) -> str | None:
    problem = "no attempt made"
    try:
        async with asyncio.timeout(wait):
            while True:
                try:
                    await backend.preload()
                except ollama.ResponseError as exc:
                    if exc.status_code == 404:
                        return backend.missing_message()
                    problem = str(exc) or type(exc).__name__
                    await asyncio.sleep(1)
                except CONTROL_ERRORS as exc:
                    problem = str(exc) or type(exc).__name__
                    await asyncio.sleep(1)
                else:
                    return None
    except TimeoutError:
        where = f" in Ollama at {backend.url}" if several else ""
        return f"model {backend.config.model} is not warm{where}: {problem}"


def _preload_command(argv: Sequence[str]) -> int:
    parser = settings_parser(
        prog="python -m server preload",
        description=(
            "Load the model into Ollama with the server's own load-time options, then exit:\n"
            "0 once it is warm, 1 if it is not within --wait seconds (at once if Ollama does\n"
            "not have the model), 2 for a bad setting. Takes every setting of python -m server."
        ),
        env=os.environ,
    )
    parser.add_argument(
        "--wait",
        type=_seconds,
        default=300.0,
        metavar="SECONDS",
        help="how long to keep trying while Ollama is not ready (default 300)",
    )
    args = parser.parse_args(argv)
    try:
        config = config_from(args, os.environ)
    except ConfigError as exc:
        print(f"python -m server preload: error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config)
    problem = asyncio.run(preload(config, args.wait))
    if problem is not None:
        print(f"python -m server preload: {problem}", file=sys.stderr)
        return 1
    print(f"model {config.model} is warm in Ollama at {', '.join(config.ollama_urls)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the subcommand named first (``preload``, ``vapi-assistant``), else the server."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["vapi-assistant"]:
        return vapi_assistant(args[1:])
    if args[:1] == ["preload"]:
        return _preload_command(args[1:])
    return _serve_command(args)


if __name__ == "__main__":
    sys.exit(main())
