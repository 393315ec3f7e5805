"""The settings of a benchmark: the command line, and the child processes' arguments."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .targets import SYSTEM_PROMPT, TARGETS

__all__ = [
    "DEFAULT_LEVELS",
    "DEFAULT_MODEL",
    "SCALING_LEVELS",
    "SCALING_MARKDOWN",
    "SCALING_PLOT",
    "Settings",
    "parse_args",
    "server_args",
    "simulator_args",
]


DEFAULT_MODEL = "llama3.1:8b"
DEFAULT_LEVELS = (1, 50, 200)
SCALING_LEVELS = (1, 10, 50, 200, 500)
SCALING_MARKDOWN = Path("bench-results/scaling.md")
SCALING_PLOT = Path("bench-results/scaling.png")


@dataclass(frozen=True)
class Settings:
    """Everything the command line decides."""

    levels: tuple[int, ...]
    targets: tuple[str, ...]
    model: str
    ttft_ms: float
    itl_ms: float
    tokens: int
    jitter_ms: float | None
    parallel: int
    duration: float | None
    streams: int | None
    warmup: float
    warmup_streams: int
    timeout: float
    drift_check: bool
    server_args: tuple[str, ...]
    api_key: str | None
    json_path: Path | None
    markdown_path: Path | None
    plot_path: Path | None

    @property
    def stream_seconds(self) -> float:
        """How long one simulated stream takes without any overhead."""
        return (self.ttft_ms + self.itl_ms * max(self.tokens - 1, 0)) / 1000.0


def _csv_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("levels must be positive integers")
    return values


def _csv_targets(text: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [v for v in values if v not in TARGETS]
    if unknown or not values:
        raise argparse.ArgumentTypeError(
            f"unknown target(s) {unknown}; known: {', '.join(TARGETS)}"
        )
    return values


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    """Read the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench",
        description="Compare the server with direct (simulated) Ollama under the same load.",
    )
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="the scaling run: levels 1,10,50,200,500 (unless --levels), markdown table "
        "and plot written (default paths under bench-results/)",
    )
    parser.add_argument(
        "--levels",
        type=_csv_ints,
        default=None,
        help="concurrent streams per level (default 1,50,200; with --scaling 1,10,50,200,500)",
    )
    parser.add_argument(
        "--targets",
        type=_csv_targets,
        default=("direct", "sse", "ws", "retell"),
        help=f"targets, in order (default direct,sse,ws,retell; known: {','.join(TARGETS)})",
    )
    parser.add_argument("--ttft", type=float, default=50.0, help="simulated ms to first token")
    parser.add_argument("--itl", type=float, default=20.0, help="simulated ms between tokens")
    parser.add_argument("--tokens", type=int, default=40, help="simulated tokens per answer")
    parser.add_argument("--jitter", type=float, default=None, help="simulator jitter, ms")
    parser.add_argument(
        "--parallel", type=int, default=None, help="simulator slots (default: the highest level)"
    )
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument(
        "--duration", type=float, default=None, help="measured seconds per run (default 8)"
    )
    amount.add_argument(
        "--streams",
        type=int,
        default=None,
        help="measured streams per client per run, instead of --duration",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.5,
        help="discarded seconds before the window (--duration mode; default "
        "1.5, at least one stream's length)",
    )
    parser.add_argument(
        "--warmup-streams",
        type=int,
        default=1,
        help="discarded streams per client (--streams mode; default 1)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=20.0,
        help="seconds a stream may take before it counts as failed",
    )
    parser.add_argument(
        "--no-drift-check",
        action="store_true",
        help="do not run direct again after the server at each level",
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="argument passed to the server, repeatable; write --server-arg=--flag=value",
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name")
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="PATH",
        help="also write all figures as JSON here",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"also write the tables as markdown here (with --scaling default {SCALING_MARKDOWN})",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="PATH",
        help="also plot TTFT against concurrency as a PNG here "
        f"(with --scaling default {SCALING_PLOT})",
    )
    args = parser.parse_args(argv)  # fmt: skip
    if args.streams is None and args.duration is None:
        args.duration = 8.0
    if args.levels is None:
        args.levels = SCALING_LEVELS if args.scaling else DEFAULT_LEVELS
    if args.scaling:
        args.markdown = args.markdown or SCALING_MARKDOWN
        args.plot = args.plot or SCALING_PLOT
    server_args = tuple(args.server_arg)
    api_key = None
    for i, arg in enumerate(server_args):
        if arg == "--api-key" and i + 1 < len(server_args):
            api_key = server_args[i + 1]
        elif arg.startswith("--api-key="):
            api_key = arg.split("=", 1)[1]
    return Settings(
        levels=args.levels,
        targets=args.targets,
        model=args.model,
        ttft_ms=args.ttft,
        itl_ms=args.itl,
        tokens=args.tokens,
        jitter_ms=args.jitter,
        parallel=args.parallel or max(args.levels),
        duration=args.duration,
        streams=args.streams,
        warmup=args.warmup,
        warmup_streams=args.warmup_streams,
        timeout=args.timeout,
        drift_check=not args.no_drift_check,
        server_args=server_args,
        api_key=api_key,
        json_path=args.json,
        markdown_path=args.markdown,
        plot_path=args.plot,
    )


def simulator_args(settings: Settings) -> list[str]:
    """The simulator's arguments: the simulated model, timings and slots, already loaded."""
    args = [
        "--model", settings.model,
        "--ttft", f"{settings.ttft_ms:g}", "--itl", f"{settings.itl_ms:g}",
        "--tokens", str(settings.tokens), "--parallel", str(settings.parallel),
        "--preloaded",
    ]  # fmt: skip
    if settings.jitter_ms is not None:
        args += ["--jitter", f"{settings.jitter_ms:g}"]
    return args


def server_args(settings: Settings) -> list[str]:
    """The server's arguments: ``--model``, the ``--server-arg`` ones, ``--max-concurrency``
    and, for the ``retell`` target, ``--system-prompt``.

    Unless given, ``--max-concurrency`` is the simulator's slot count (as one matches it
    to ``OLLAMA_NUM_PARALLEL``), so the server admits every stream the simulator serves;
    the system prompt is the conversation's, which Retell's transcript lacks (the other
    targets send it, so it does not apply to them).
    """
    args = ["--model", settings.model, *settings.server_args]
    if not any(a == "--max-concurrency" or a.startswith("--max-concurrency=") for a in args):
        args += ["--max-concurrency", str(settings.parallel)]
    given = any(a == "--system-prompt" or a.startswith("--system-prompt=") for a in args)
    if "retell" in settings.targets and not given:
        args += ["--system-prompt", SYSTEM_PROMPT]
    return args
