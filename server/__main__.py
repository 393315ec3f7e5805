"""``python -m server``: run the HTTP (SSE) and websocket server on one port."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import uvicorn

from .app import App
from .config import Config, ConfigError, parse_config
from .engine import Engine

log = logging.getLogger("server")


def build_app(config: Config) -> App:
    """The ASGI application for a configuration, with its engine."""
    return App(config, Engine(config))


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the configuration, then serve until stopped."""
    try:
        config = parse_config(argv)
    except ConfigError as exc:
        print(f"python -m server: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if config.api_key is None and not config.loopback:
        log.warning(
            "!!! NO API KEY: listening on %s without --api-key / API_KEY: anyone who can reach "
            "this port can use the model. Set API_KEY. !!!",
            config.host,
        )
    uvicorn.run(
        build_app(config),
        host=config.host,
        port=config.port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        ws_max_size=config.max_body_bytes,
        lifespan="on",
        access_log=False,
        log_level=config.log_level,
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
