"""``python -m server``: run the HTTP (SSE) and websocket server on one port.

``python -m server preload`` loads the model into Ollama with the server's own
load-time options and exits: 0 once it is warm, 1 if it is not within ``--wait``.

``python -m server vapi-assistant`` prints a VAPI assistant (JSON) pointing at this server.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType

import uvicorn

from .config import Config, ConfigError, parse_config
from .core.engine import CONTROL_ERRORS, Engine
from .doors.http import App
from .doors.protocol import WebSocketProtocol, http_protocol
from .doors.vapi import vapi_assistant
from .ops.logs import setup_logging

log = logging.getLogger("server")


def build_app(config: Config) -> App:
    """The ASGI application for a configuration, with its engine."""
    return App(config, Engine(config))


class _Server(uvicorn.Server):
    """uvicorn's server, but a SIGTERM drain ends in exit status 0.

    uvicorn re-raises the signal after shutting down, so the process would die of
    SIGTERM; for a container, a completed drain is a clean exit.
    """

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM:
            self.should_exit = True
        else:
            super().handle_exit(sig, frame)


def serve(config: Config, app: App) -> int:
    """Serve ``app`` until stopped."""
    if config.api_key is None and not config.loopback:
        log.warning(
            "!!! NO API KEY: listening on %s without --api-key / API_KEY: anyone who can reach "
            "this port can use the model. Set API_KEY. !!!",
            config.host,
        )
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
        )
    )
    sockets = [server.config.bind_socket()]
    if config.health_port is not None and config.health_port != config.port:
        # RunPod may probe /ping on its own port; the same app answers there.
        health = uvicorn.Config(server.config.app, host=config.host, port=config.health_port)
        sockets.append(health.bind_socket())
    server.run(sockets=sockets)
    return 0


async def preload(config: Config, wait: float) -> str | None:
    """Load the model, retrying for up to ``wait`` seconds; returns why it failed, or None."""
    engine = Engine(config)
    problem = "no attempt made"
    try:
        async with asyncio.timeout(wait):
            while True:
                try:
                    await engine.preload()
                except CONTROL_ERRORS as exc:
                    problem = str(exc) or type(exc).__name__
                    await asyncio.sleep(1)
                else:
                    return None
    except TimeoutError:
        return problem
    finally:
        await engine.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the configuration, then serve (or preload) until done."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["vapi-assistant"]:
        return vapi_assistant(args[1:])
    command = args.pop(0) if args and args[0] == "preload" else "serve"
    wait = 300.0
    if command == "preload" and args[:1] == ["--wait"] and len(args) > 1:
        wait = float(args[1])
        args = args[2:]
    try:
        config = parse_config(args)
        setup_logging(config)
        app = build_app(config) if command == "serve" else None
    except ConfigError as exc:
        print(f"python -m server: error: {exc}", file=sys.stderr)
        return 2
    if app is not None:
        return serve(config, app)
    problem = asyncio.run(preload(config, wait))
    if problem is not None:
        print(
            f"python -m server preload: model {config.model} is not warm: {problem}",
            file=sys.stderr,
        )
        return 1
    print(f"model {config.model} is warm in Ollama at {config.ollama_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
