"""Send encoded images to a tier and print one JSON object per image.

    python -m tools.client bus.jpg zidane.jpg --tier balanced [--annotate out/]
    python -m tools.client frames/*.jpg --tier track [--camera door-1]

A tier that tracks takes the images as one camera's frames, in the order given: one sequence
(docs/tracking.md), one image per request, each person with its track id and voted gender.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from tritonclient.utils import InferenceServerException

from pipelines import spec
from tools.client.options import add_thresholds, thresholds
from tools.client.people import PeopleClient, Person
from tools.client.sequence import CameraSequence, Flags

log = logging.getLogger("client")


def annotate(path: Path, persons: list[Person], out_dir: Path) -> Path:
    """The image with its persons drawn, written into `out_dir` (OpenCV imported only when asked for)."""
    import cv2

    from tools.client.draw import draw_persons

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    draw_persons(image, persons)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / path.name
    cv2.imwrite(str(target), image)
    return target


def default_camera(images: list[Path]) -> str:
    """The first image's folder name: frames/0001.jpg ... are camera `frames`."""
    return images[0].resolve().parent.name or "images"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.client", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("images", nargs="+", type=Path, help="JPEG or PNG files")
    parser.add_argument("--tier", choices=spec.TIER_NAMES, default=spec.DEFAULT_TIER)
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument(
        "--url", help=f"server address (default {spec.HOST}:{spec.GRPC_PORT} for gRPC, :{spec.HTTP_PORT} for HTTP)"
    )
    add_thresholds(parser)
    parser.add_argument("--api-key", help="the key given to `make serve API_KEY=...`")
    parser.add_argument("--annotate", type=Path, metavar="DIR", help="write each image with its boxes drawn into DIR")
    parser.add_argument("--camera", metavar="ID",
                        help="a tier that tracks: the camera's id, sent as the sequence id (default: the first "
                        "image's folder name)")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    url = args.url or f"{spec.HOST}:{spec.GRPC_PORT if args.protocol == 'grpc' else spec.HTTP_PORT}"
    client = PeopleClient(url, args.protocol, args.api_key)
    tracks = spec.tier(args.tier).tracks
    sequence = CameraSequence(args.camera or default_camera(args.images)) if tracks else None
    last = len(args.images) - 1
    failures = 0
    for k, path in enumerate(args.images):
        record: dict[str, Any] = {"image": str(path), "tier": args.tier}
        flags: Flags | None = None
        try:
            data = path.read_bytes()
            if sequence is None:
                (persons,) = client.detect([data], args.tier, **thresholds(args))
            else:
                flags = sequence.next(k, end=k == last)
                record.update(camera=flags.camera, sequence=flags.sequence)
                persons = client.track(data, args.tier, flags.camera, flags.start, flags.end, **thresholds(args))
        except (OSError, InferenceServerException) as e:
            if sequence is not None and flags is not None:
                sequence.refused(flags, str(e))
            failures += 1
            record["error"] = str(e)
            print(json.dumps(record), flush=True)
            continue
        record["count"] = len(persons)
        record["persons"] = [p.as_json() for p in persons]
        if args.annotate:
            record["annotated"] = str(annotate(path, persons, args.annotate))
        print(json.dumps(record), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
