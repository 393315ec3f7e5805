"""The command: start the children, run the plan, report, write the files, stop the children."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import orjson
import uvloop

from ..processes import Child, start_server, start_simulator
from .plot import plot_scaling
from .report import format_markdown, report
from .run import run_all
from .settings import parse_args, server_args, simulator_args
from .targets import TARGETS, Endpoints

__all__ = ["main"]


# A warning or error in the server's log, as text or as JSON lines.
_PROBLEMS = (" WARNING ", " ERROR ", '"level":"warning"', '"level":"error"', "Traceback")


def _log_warnings(child: Child) -> list[str]:
    return [
        line
        for line in child.log_text().splitlines()
        if any(problem in line for problem in _PROBLEMS)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Start the children, run every level against every target, report, stop the children."""
    settings = parse_args(argv)
    started = time.perf_counter()
    wall_start = time.time()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-"))
    children: list[Child] = []
    failed = False
    try:
        sim = start_simulator(simulator_args(settings), log_dir)
        children.append(sim)
        sim_host, sim_port = sim.url.split("://", 1)[1].rsplit(":", 1)
        pids = {"sim": sim.pid, "bench": os.getpid()}
        ends = Endpoints(settings.model, sim_host, int(sim_port), api_key=settings.api_key)
        server: Child | None = None
        if any(TARGETS[name][0] for name in settings.targets):
            server = start_server(sim.url, server_args(settings), log_dir)
            children.append(server)
            pids["server"] = server.pid
            host, port = server.url.split("://", 1)[1].rsplit(":", 1)
            ends = Endpoints(
                settings.model, sim_host, int(sim_port), host, int(port), settings.api_key
            )
        print(
            f"simulator pid {sim.pid} at {sim.url}"
            + (f"; server pid {server.pid} at {server.url}" if server else ""),
            file=sys.stderr,
        )
        results = uvloop.run(run_all(settings, ends, pids, children))
        data = report(settings, results, time.perf_counter() - started)
        if server is not None:
            warnings = _log_warnings(server)
            if warnings:
                print(f"server log: {len(warnings)} warning/error lines, first ones:")
                for line in warnings[:5]:
                    print(f"  {line}")
            data["server_log_warnings"] = warnings[:50]
        if settings.json_path is not None:
            settings.json_path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
            print(f"figures written to {settings.json_path}")
        if settings.markdown_path is not None:
            when = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(wall_start))
            settings.markdown_path.parent.mkdir(parents=True, exist_ok=True)
            settings.markdown_path.write_text(format_markdown(settings, results, data, when))
            print(f"markdown table written to {settings.markdown_path}")
        if settings.plot_path is not None:
            plot_scaling(settings, results, settings.plot_path)
            print(f"plot written to {settings.plot_path}")
        for child in children:
            child.check_alive()  # a child that died mid-run makes the figures suspect
        return 1 if data["missed"] else 0
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted", file=sys.stderr)
        failed = True
        return 130
    except RuntimeError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        failed = True
        return 2
    finally:
        for child in reversed(children):
            child.stop()
        if failed:
            print(f"child logs kept in {log_dir}", file=sys.stderr)
        else:
            shutil.rmtree(log_dir, ignore_errors=True)
