"""Draining before a stop: every request a tier admitted is answered, later ones are refused, then SIGTERM.

The launcher sends each tier's preprocess a request carrying the secret it put in the server's
environment (spec.DRAIN_PARAMETER); it queues behind every request already there, preprocess answers
those and refuses every request after it with UNAVAILABLE, and the drain waits until the requests
preprocess let through have left postprocess (tools/server/stats.py, Stats.admitted_in_flight).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from pipelines import spec
from tools.server.stats import Stats

log = logging.getLogger(__name__)
DRAIN_SEQUENCE_ID = "people-drain"  # the drain marker's sequence in a tier that tracks


class Progress:
    """Whether a draining server still gets work done: its tiers' admitted and answered counters move.

    Read at most twice a second, whoever asks (the drain's threads poll it)."""

    def __init__(self, stats: Stats, stall_s: float):
        self.stats = stats
        self.stall_s = stall_s
        self.lock = threading.Lock()
        self.seen: float | None = None
        self.moved = self.checked = time.monotonic()

    def _work_done(self) -> float:
        metrics = self.stats.metrics()
        return sum(v for (metric, _), v in metrics.items() if metric in (spec.ADMITTED_METRIC, spec.ANSWERED_METRIC))

    def stalled(self) -> bool:
        with self.lock:
            now = time.monotonic()
            if now - self.checked >= 0.5:
                self.checked = now
                try:
                    done = self._work_done()
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    done = self.seen
                if done != self.seen:
                    self.seen, self.moved = done, now
            return now - self.moved > self.stall_s


class Drain:
    """The drain of one server: its counters, and the secret its preprocess models take as the cut."""

    def __init__(self, stats: Stats, token: str):
        self.stats = stats
        self.token = token

    def _mark(self, tier: spec.Tier, progress: Progress, abort: threading.Event) -> bool:
        """Queue the drain marker at the tier's preprocess; True once preprocess has seen it.

        Retried while Triton refuses it for a full queue or a queue timeout (503) and the server still
        makes progress; every request queued before it is admitted, every one after it refused.
        """
        e = self.stats.endpoints
        parameters: dict[str, str | bool] = {spec.DRAIN_PARAMETER: self.token}
        if tier.tracks:  # its preprocess takes sequences only: the marker is a sequence of its own, one frame
            parameters |= {"sequence_id": DRAIN_SEQUENCE_ID, "sequence_start": True, "sequence_end": True}
        body = {
            "inputs": [{"name": spec.IMAGE.name, "shape": [1, 1], "datatype": spec.IMAGE.dtype.value, "data": [0]}],
            "parameters": parameters,
        }
        headers = {"Content-Type": "application/json"}
        if self.stats.api_key:
            headers[spec.API_KEY_HEADER] = self.stats.api_key
        url = f"http://{e.http_url}/v2/models/{tier.model(spec.Step.PREPROCESS)}/infer"
        while not progress.stalled() and not abort.is_set():
            request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=progress.stall_s) as r:
                    message, status = r.read().decode(), r.status
            except urllib.error.HTTPError as error:
                message, status = error.read().decode(errors="replace"), error.code
            except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
                log.warning("drain of %s: %s", tier.name, error)
                return False
            if spec.DRAINING_MESSAGE in message or status == 404:  # cut now, or a tier this server does not load
                return True
            if status != 503:  # not a queue refusal: the step is broken; waiting will not help
                log.warning("drain of %s: preprocess answered %s %s", tier.name, status, message[:200])
                return False
            time.sleep(0.05)
        return False

    def __call__(self, stall_s: float = spec.EXIT_TIMEOUT_S, abort: threading.Event | None = None) -> int:
        """Cut every tier (spec.DRAIN_PARAMETER) and wait for what was admitted; returns how many remain.

        Needed because on SIGTERM Triton refuses the next step of an ensemble request already in
        flight ("Server is stopping", seen here on 2.51; the same code path in later releases per
        triton-inference-server/core src/dynamic_batch_scheduler.cc). Requests that reached a tier
        before its cut finish, whatever step they are in; later ones get UNAVAILABLE. It waits as long
        as the server makes progress (a full tier on a busy machine takes a while) and gives up after
        `stall_s` without any. cpu variant only: on the GPU variant the orchestrator stops sending
        traffic first.
        """
        abort = abort or threading.Event()
        progress = Progress(self.stats, stall_s)
        with ThreadPoolExecutor(len(spec.TIERS)) as pool:
            cut = list(pool.map(lambda t: self._mark(t, progress, abort), spec.TIERS))
        uncut = [t.name for t, ok in zip(spec.TIERS, cut, strict=True) if not ok]
        if uncut:
            log.warning("could not cut tier(s) %s before stopping", ", ".join(uncut))
        remaining = self.stats.admitted_in_flight()
        while remaining > 0 and not progress.stalled() and not abort.is_set():
            time.sleep(0.1)
            remaining = self.stats.admitted_in_flight()
        return remaining + len(uncut)
