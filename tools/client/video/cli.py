"""Run videos, cameras or stream URLs through a tier over one gRPC stream each, results in frame order.

    python -m tools.client.video input.mp4 --tier streaming --out results/
    python -m tools.client.video rtsp://camera/stream --max-inflight 4 --drop oldest
    python -m tools.client.video a.mp4 b.mp4 --out results/     # results/a/..., results/b/...

Each source gets OUT/annotated.mp4 and OUT/frame_counts.jsonl (OUT/<source>/
when there are several), a progress line on stderr and one JSON summary on
stdout (also OUT/summary.json). With a tier that tracks (--tier track) each
source is one camera, a sequence whose id is the source's name (unique in the
run): persons carry their track id and voted gender, and the summary counts
the people seen (docs/video.md). Files are sent completely; live sources
(camera index, rtsp/http/... URL, or --mode live) drop frames by --drop when
the server falls behind. Ctrl-C stops cleanly: the files written so far stay
playable. Exit status: 0 all frames answered, 1 some failed, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines import spec
from tools.client.options import add_thresholds, thresholds
from tools.client.video.media import FileSink, open_source, source_name
from tools.client.video.session import DropPolicy, OnError, StreamOptions, StreamSession

log = logging.getLogger("video")


@dataclass
class Job:
    location: str
    out_dir: Path
    session: StreamSession | None = None
    failure: str | None = None  # the source could not be opened or the session crashed
    finished: threading.Event = field(default_factory=threading.Event)


def unique_names(locations: list[str]) -> list[str]:
    """Each source's name (`source_name`), with -2, -3 ... where names collide: its camera id and folder."""
    seen: dict[str, int] = {}
    names = []
    for location in locations:
        name = source_name(location)
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return names


def output_dirs(names: list[str], out: Path) -> list[Path]:
    """OUT itself for one source; OUT/<name> for several."""
    return [out] if len(names) == 1 else [out / name for name in names]


def run_job(job: Job) -> None:
    assert job.session is not None
    try:
        job.session.run()
    except Exception as e:  # one source failing must not take the others down
        log.exception("%s: the run failed", job.location)
        job.failure = f"{type(e).__name__}: {e}"
    finally:
        job.finished.set()


def progress_line(jobs: list[Job]) -> str:
    parts = []
    for job in jobs:
        if job.session is None:
            continue
        s = job.session.stats
        rate = (s.ok + s.errors) / s.elapsed_s if s.elapsed_s > 0 else 0.0
        parts.append(
            f"{job.session.source.name}: {s.sent} sent {s.dropped} dropped {s.errors} errors {rate:.1f} frames/s"
        )
    return " | ".join(parts)


def summarize(job: Job, tier: str) -> dict[str, Any]:
    summary: dict[str, Any] = {"source": job.location, "tier": tier}
    if job.session is not None:
        summary["mode"] = "live" if job.session.source.live else "file"
        summary.update(job.session.stats.summary())
        summary["outputs"] = {
            "video": str(job.out_dir / FileSink.VIDEO),
            "frames": str(job.out_dir / FileSink.JSONL),
        }
    if job.failure:
        summary["failure"] = job.failure
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.client.video", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    d = StreamOptions()
    parser.add_argument("sources", nargs="+", help="video files, camera indices (0) or stream URLs (rtsp://...)")
    parser.add_argument("--tier", choices=spec.TIER_NAMES, default=d.tier,
                        help="streaming keeps order; track adds an id per person (a sequence per source)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("results"), help="output folder (default results/)")
    parser.add_argument("--url", default=d.url, help="the server's gRPC address")
    parser.add_argument("--api-key", help="the key given to `make serve API_KEY=...`")
    parser.add_argument("--max-inflight", type=int, default=d.max_inflight, help="frames sent, not yet written")
    parser.add_argument("--max-pending", type=int, default=d.max_pending,
                        help="live: captured frames waiting for a slot")  # fmt: skip
    parser.add_argument("--drop", choices=[p.value for p in DropPolicy], default=d.drop.value,
                        help="live: which frame goes when the buffer is full (oldest keeps results fresh)")  # fmt: skip
    parser.add_argument("--mode", choices=("auto", "file", "live"), default="auto",
                        help="auto: camera indices and network URLs are live, files are sent completely")  # fmt: skip
    parser.add_argument("--on-error", choices=[e.value for e in OnError], default=d.on_error.value)
    parser.add_argument("--jpeg-quality", type=int, default=d.jpeg_quality, help="client-side JPEG, 1-100")
    add_thresholds(parser)
    parser.add_argument("--timeout", type=float, default=d.request_timeout_s,
                        help="seconds without an answer before reconnecting")  # fmt: skip
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress line on stderr (default: when stderr is a terminal)")  # fmt: skip
    args = parser.parse_args(argv)
    if not 1 <= args.jpeg_quality <= 100:
        parser.error("--jpeg-quality must be within 1-100")
    if args.max_inflight < 1 or args.max_pending < 1:
        parser.error("--max-inflight and --max-pending must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    options = StreamOptions(
        url=args.url,
        tier=args.tier,
        max_inflight=args.max_inflight,
        max_pending=args.max_pending,
        drop=DropPolicy(args.drop),
        on_error=OnError(args.on_error),
        jpeg_quality=args.jpeg_quality,
        api_key=args.api_key,
        request_timeout_s=args.timeout,
        **thresholds(args),
    )
    live = None if args.mode == "auto" else args.mode == "live"
    stop = threading.Event()
    names = unique_names(args.sources)
    dirs = output_dirs(names, args.out)
    jobs = [Job(location, out_dir) for location, out_dir in zip(args.sources, dirs, strict=True)]
    for job, name in zip(jobs, names, strict=True):
        try:
            source = open_source(job.location, live, name)
        except OSError as e:
            log.error("%s", e)
            job.failure = str(e)
            continue
        job.session = StreamSession(source, FileSink(job.out_dir, source.fps), options, stop)
    running = [job for job in jobs if job.session]
    for job in running:
        threading.Thread(target=run_job, args=(job,), name=job.location, daemon=True).start()

    show = sys.stderr.isatty() if args.progress is None else args.progress
    interrupted = False
    try:
        # Event.wait, not Thread.join: a join interrupted by Ctrl-C can report a live thread as finished.
        while not all(job.finished.wait(0.5 / len(running)) for job in running):
            if show:
                sys.stderr.write(f"\r{progress_line(jobs)}\x1b[K")
                sys.stderr.flush()
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted: finishing the files written so far (Ctrl-C again to abandon them)")
        stop.set()
        for job in running:
            job.finished.wait()
    if show:
        sys.stderr.write(f"\r{progress_line(jobs)}\x1b[K\n")

    failed = False
    for job in jobs:
        summary = summarize(job, args.tier)
        if job.session is not None:
            (job.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            lat = summary["latency_ms"]
            log.info(
                "%s: %d sent, %d dropped, %d errors; latency mean %s ms, p99 %s ms; %s frames/s -> %s",
                job.location, summary["sent"], summary["dropped"], summary["errors"], lat["mean"], lat["p99"],
                summary["throughput_fps"], job.out_dir,
            )  # fmt: skip
            if "people" in summary:
                people = summary["people"]
                log.info("%s: %d people, by voted gender %s", job.location, people["unique"], people["genders"])
        failed |= bool(job.failure or summary.get("errors") or summary.get("stopped"))
        print(json.dumps(summary), flush=True)
    return 130 if interrupted else int(failed)


if __name__ == "__main__":
    sys.exit(main())
