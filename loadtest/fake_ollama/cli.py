"""The command line: every knob of :class:`SimConfig` is a flag; serves until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
from collections.abc import Sequence

import uvloop

from .config import CHOICES, SimConfig
from .server import start


def build_arg_parser() -> argparse.ArgumentParser:
    """The command-line interface; every knob of SimConfig is a flag."""
    defaults = SimConfig()
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.fake_ollama",
        description="A simulated Ollama server speaking Ollama's HTTP API with scripted timing.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=11434, help="port; 0 picks a free one")
    parser.add_argument(
        "--model",
        dest="models",
        action="append",
        metavar="NAME",
        help=f"a model that exists (repeatable; default {defaults.models[0]})",
    )
    parser.add_argument(
        "--profile",
        dest="profiles",
        action="append",
        metavar="MODEL=PROFILE",
        help=f"how MODEL behaves: one of {', '.join(CHOICES['profiles'])} (repeatable; "
        "default by name: qwen3* qwen3, gpt-oss* gpt-oss, else llama3.1)",
    )
    milliseconds: list[tuple[str, str]] = [
        ("ttft", "time to first token, the fixed part"),
        (
            "ttft-per-prompt-token",
            "extra time to first token per evaluated (uncached) prompt token",
        ),
        (
            "cache-restore-per-token",
            "extra time to first token per token restored from the RAM cache",
        ),
        ("itl", "time between tokens"),
        ("jitter", "uniform +- jitter on every delay"),
        ("load-ms", "time to load a cold model"),
    ]
    for flag, meaning in milliseconds:
        default = getattr(defaults, flag.replace("-", "_"))
        parser.add_argument(
            f"--{flag}",
            type=float,
            default=default,
            metavar="MS",
            help=f"{meaning} (ms, default %(default)s)",
        )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed")
    parser.add_argument(
        "--tokens", type=int, default=defaults.tokens, help="reply length in tokens"
    )
    parser.add_argument(
        "--think-tokens",
        type=int,
        default=defaults.think_tokens,
        help="thinking tokens before the answer, when the model thinks",
    )
    parser.add_argument(
        "--think-anyway",
        action="store_true",
        help="the model reasons even with thinking off",
    )
    parser.add_argument(
        "--tool-calls", type=int, default=defaults.tool_calls, help="tool calls per tool reply"
    )
    parser.add_argument(
        "--text-before-call",
        type=int,
        default=defaults.text_before_call,
        help="content tokens before a tool call",
    )
    parser.add_argument(
        "--parallel",
        type=int,
        default=defaults.parallel,
        help="generation slots (OLLAMA_NUM_PARALLEL, default %(default)s)",
    )
    parser.add_argument(
        "--prompt-cache",
        action=argparse.BooleanOptionalAction,
        default=defaults.prompt_cache,
        help="reuse each slot's cached prompt prefix, as llama-server's cache_prompt",
    )
    parser.add_argument(
        "--slot-similarity",
        type=float,
        default=defaults.slot_similarity,
        help="llama-server's --slot-prompt-similarity (default %(default)s)",
    )
    parser.add_argument(
        "--cache-ram-mib",
        type=int,
        default=defaults.cache_ram_mib,
        help="llama-server's --cache-ram in MiB; 0 turns the RAM prompt cache off",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=defaults.max_queue,
        help="requests that may wait for a load",
    )
    parser.add_argument(
        "--slowdown",
        type=float,
        default=defaults.slowdown,
        help="F: time between tokens grows by the factor 1 + F * busy_slots / parallel",
    )
    parser.add_argument("--preloaded", action="store_true", help="start with the model loaded")
    parser.add_argument(
        "--keep-alive", default=defaults.keep_alive, help="default keep_alive (Go duration)"
    )
    parser.add_argument(
        "--fail-rate",
        type=float,
        default=defaults.fail_rate,
        help="probability of a failure per request",
    )
    parser.add_argument("--fail-mode", choices=CHOICES["fail_mode"], default=defaults.fail_mode)
    parser.add_argument(
        "--abort-load",
        action=argparse.BooleanOptionalAction,
        default=defaults.abort_load,
        help="a client leaving during the load it started aborts it",
    )
    parser.add_argument("--load-fail", action="store_true", help="every load fails (500)")
    parser.add_argument(
        "--crash-on-error",
        action=argparse.BooleanOptionalAction,
        default=defaults.crash_on_error,
        help="a mid-stream error is llama-server dying: the model must load again",
    )
    parser.add_argument(
        "--slot-leak",
        action="store_true",
        help="a client leaving mid-reply keeps its slot held (ollama/ollama#17131)",
    )
    parser.add_argument("--tool-mode", choices=CHOICES["tool_mode"], default=defaults.tool_mode)
    parser.add_argument("--version", default=defaults.version, help="version /api/version reports")
    parser.add_argument(
        "--check-host", action="store_true", help="answer 403 to a non-local Host header"
    )
    return parser


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """A SimConfig from parsed command-line arguments; raises ValueError on a bad knob."""
    knobs = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(SimConfig)
        if getattr(args, field.name) is not None
    }
    if "profiles" in knobs:
        pairs = [item.partition("=") for item in knobs["profiles"]]
        if any(not sep for _, sep, _ in pairs):
            raise ValueError("--profile takes MODEL=PROFILE")
        knobs["profiles"] = {model: profile for model, _, profile in pairs}
    return SimConfig(**knobs)


async def serve(config: SimConfig, host: str, port: int) -> None:
    """Run until SIGTERM or SIGINT, announcing the address on stdout once listening."""
    sim = await start(config, host, port)
    shown_host = f"[{host}]" if ":" in host else host
    print(f"fake-ollama listening on http://{shown_host}:{sim.port}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        sim.loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await sim.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m loadtest.fake_ollama``."""
    parser = build_arg_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    uvloop.run(serve(config, args.host, args.port))
    return 0
