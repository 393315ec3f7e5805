"""A fake RunPod job server: drives the RunPod SDK's real job loop on loopback.

The SDK's worker (runpod 1.12, ``runpod/serverless/modules/rp_job.py`` and
``rp_http.py``) talks to four URLs taken from its environment (:meth:`JobServer.env`):

- ``GET RUNPOD_WEBHOOK_GET_JOB&job_in_progress=0|1``: take one job. The answer is
  ``{"id", "input"}`` (200), or 204 when there is none. With more than one free slot the
  SDK asks ``/job-take-batch/`` with ``&batch_size=N`` instead and takes a JSON list.
  Like RunPod's, this server holds an empty poll open a while before its 204.
- ``GET`` the job-take URL with ``/job-take/`` replaced by ``/job-stop/``: the ids of jobs
  to stop, ``{"jobsToStop": [...]}`` (200) or 204. The SDK cancels each one's task.
- ``POST RUNPOD_WEBHOOK_POST_STREAM&isStream=false`` (``$ID`` is the job id): one
  streamed item, ``{"output": item}``.
- ``POST RUNPOD_WEBHOOK_POST_OUTPUT&isStream=true|false``: the job's end,
  ``{"output": ...}`` or ``{"error": "..."}``.

Bodies are JSON sent as ``application/x-www-form-urlencoded``. Everything the worker
posts is recorded with its arrival time (``time.time()``).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["JobServer", "Posted"]

# How long an empty job-take or job-stop poll is held open before its 204.
POLL_SECONDS = 0.5
WORKER_ID = "test-worker"


@dataclass(frozen=True)
class Posted:
    """One item a worker posted: a streamed item or a job's result."""

    at: float
    body: dict[str, Any]


@dataclass
class _State:
    queue: deque[dict[str, Any]] = field(default_factory=deque)
    stops: list[str] = field(default_factory=list)
    streamed: dict[str, list[Posted]] = field(default_factory=dict)
    results: dict[str, Posted] = field(default_factory=dict)
    taken: dict[str, float] = field(default_factory=dict)
    polls: int = 0
    closed: bool = False


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, jobs: JobServer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.jobs = jobs


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: one line per poll would drown the test output."""

    def _answer(self, status: int, body: Any = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        jobs = self.server.jobs
        if url.path.startswith("/job-take/"):
            taken = jobs.hand_out(1)
            if taken:
                self._answer(200, taken[0])
            else:
                self._answer(204)
        elif url.path.startswith("/job-take-batch/"):
            taken = jobs.hand_out(int(query["batch_size"][0]))
            if taken:
                self._answer(200, taken)
            else:
                self._answer(204)
        elif url.path.startswith("/job-stop/"):
            stops = jobs.stops_due()
            if stops:
                self._answer(200, {"jobsToStop": stops})
            else:
                self._answer(204)
        else:
            self._answer(404, {"error": f"no route for {url.path}"})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        job_id = parse_qs(url.query)["id"][0]
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        jobs = self.server.jobs
        if url.path.startswith("/job-stream/"):
            jobs.record(job_id, body, stream=True)
        elif url.path.startswith("/job-done/"):
            jobs.record(job_id, body, stream=False)
        else:
            self._answer(404, {"error": f"no route for {url.path}"})
            return
        self._answer(200, {})


class JobServer:
    """Hands jobs to a worker and records what it posts back; runs in a thread."""

    def __init__(self) -> None:
        self._state = _State()
        self._changed = threading.Condition()
        self._server = _Server(self)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="runpod-jobs", daemon=True
        )
        self._thread.start()

    def env(self) -> dict[str, str]:
        """The environment that points the SDK's worker loop at this server."""
        return {
            "RUNPOD_WEBHOOK_GET_JOB": f"{self.url}/job-take/$ID?token=test",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{self.url}/job-stream/$RUNPOD_POD_ID?id=$ID",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{self.url}/job-done/$RUNPOD_POD_ID?id=$ID",
            "RUNPOD_POD_ID": WORKER_ID,
        }

    def close(self) -> None:
        """Release held polls and stop serving."""
        with self._changed:
            self._state.closed = True
            self._changed.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    # The test's side

    def submit(self, job_input: Any) -> str:
        """Queue a job; returns its id."""
        job_id = f"job-{uuid.uuid4().hex[:12]}"
        with self._changed:
            self._state.queue.append({"id": job_id, "input": job_input})
            self._changed.notify_all()
        return job_id

    def stop(self, job_id: str) -> None:
        """Ask the worker to stop a job, as RunPod does when a job is cancelled."""
        with self._changed:
            self._state.stops.append(job_id)
            self._changed.notify_all()

    def result(self, job_id: str, timeout: float = 20.0) -> Posted:
        """The job's result, waiting for it up to ``timeout`` seconds."""
        with self._changed:
            if not self._changed.wait_for(lambda: job_id in self._state.results, timeout):
                raise TimeoutError(f"no result for {job_id} in {timeout} s")
            return self._state.results[job_id]

    def streamed(self, job_id: str, count: int = 0, timeout: float = 20.0) -> list[Posted]:
        """The items streamed for a job so far, waiting until there are ``count``."""
        with self._changed:
            if not self._changed.wait_for(
                lambda: len(self._state.streamed.get(job_id, [])) >= count, timeout
            ):
                raise TimeoutError(f"fewer than {count} items streamed for {job_id}")
            return list(self._state.streamed.get(job_id, []))

    def has_result(self, job_id: str) -> bool:
        """Whether the worker posted a result for the job."""
        with self._changed:
            return job_id in self._state.results

    def taken_at(self, job_id: str) -> float:
        """When the worker took the job."""
        with self._changed:
            return self._state.taken[job_id]

    def wait_polled(self, timeout: float = 20.0) -> None:
        """Wait until a worker has asked for jobs at least once."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._state.polls > 0, timeout):
                raise TimeoutError(f"no worker asked for jobs in {timeout} s")

    # The worker's side (called from the server's threads)

    def hand_out(self, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` queued jobs, holding the poll open a while when there are none."""
        state = self._state
        with self._changed:
            state.polls += 1
            self._changed.notify_all()
            self._changed.wait_for(lambda: state.queue or state.closed, POLL_SECONDS)
            taken = [state.queue.popleft() for _ in range(min(limit, len(state.queue)))]
            now = time.time()
            for job in taken:
                state.taken[job["id"]] = now
            return taken

    def stops_due(self) -> list[str]:
        """The ids of jobs to stop, holding the poll open a while when there are none."""
        state = self._state
        with self._changed:
            self._changed.wait_for(lambda: state.stops or state.closed, POLL_SECONDS)
            stops, state.stops = state.stops, []
            return stops

    def record(self, job_id: str, body: dict[str, Any], stream: bool) -> None:
        """Record a streamed item or a result."""
        posted = Posted(time.time(), body)
        with self._changed:
            if stream:
                self._state.streamed.setdefault(job_id, []).append(posted)
            else:
                self._state.results[job_id] = posted
            self._changed.notify_all()
