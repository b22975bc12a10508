"""Send encoded images to a tier and print one JSON object per image.

    python tools/client.py bus.jpg zidane.jpg --tier balanced [--annotate out/]

Only the file's bytes travel; decoding, letterboxing, detection and NMS happen
in the server. Boxes are x1, y1, x2, y2 in the original image's pixels.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tritonclient.utils import InferenceServerException

from pipelines import spec
from tools.tritonserver import API_KEY_HEADER

log = logging.getLogger("client")


@dataclass(frozen=True)
class Person:
    box: tuple[float, float, float, float]
    score: float
    cls: int
    gender: int  # 0 female, 1 male, -1 undetermined (spec.GENDER_LABELS)
    gender_score: float

    @property
    def gender_label(self) -> str | None:
        return spec.GENDER_LABELS[self.gender] if self.gender != spec.UNDETERMINED else None

    def as_json(self) -> dict[str, Any]:
        return {"box": list(self.box), "score": self.score, "class": self.cls, "gender": self.gender_label,
                "gender_score": self.gender_score}  # fmt: skip


def pack(images: Sequence[bytes]) -> np.ndarray:
    """Encoded images as one [N, L] uint8 batch, zero-padded to the longest (decoders ignore the tail)."""
    longest = max(len(i) for i in images)
    batch = np.zeros((len(images), longest), dtype=np.uint8)
    for row, data in zip(batch, images, strict=False):
        row[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    return batch


def unpack(outputs: dict[str, np.ndarray]) -> list[list[Person]]:
    """The padded ensemble outputs as a list of persons per image."""
    result = []
    columns = [outputs[t.name] for t in (spec.BOXES, spec.SCORES, spec.CLASSES, spec.GENDER, spec.GENDER_SCORES)]
    for n, boxes, scores, classes, gender, gender_scores in zip(
        outputs[spec.NUM_DETECTIONS.name][:, 0], *columns, strict=True
    ):
        result.append(
            [
                Person(
                    box=tuple(round(float(v), 2) for v in boxes[k]),
                    score=round(float(scores[k]), 4),
                    cls=int(classes[k]),
                    gender=int(gender[k]),
                    gender_score=round(float(gender_scores[k]), 4),
                )
                for k in range(int(n))
            ]
        )
    return result


class PeopleClient:
    """A thin gRPC or HTTP client for the `people_<tier>` ensembles."""

    def __init__(self, url: str, protocol: str = "grpc", api_key: str | None = None, timeout_s: float = 60):
        if protocol == "grpc":
            import tritonclient.grpc as client
        elif protocol == "http":
            import tritonclient.http as client
        else:
            raise ValueError(f"protocol must be grpc or http, not {protocol!r}")
        self.client_module = client
        self.protocol = protocol
        self.client = (
            client.InferenceServerClient(url)
            if protocol == "grpc"
            else client.InferenceServerClient(url, network_timeout=timeout_s, connection_timeout=timeout_s)
        )
        # Triton checks the HTTP header as given and the gRPC one with its protocol prefix.
        header = API_KEY_HEADER if protocol == "http" else f"triton-grpc-protocol-{API_KEY_HEADER}"
        self.headers = {header: api_key} if api_key else None
        self.timeout_s = timeout_s

    def close(self) -> None:
        """Close the connections (an open HTTP keep-alive connection delays Triton's shutdown)."""
        self.client.close()

    def __enter__(self) -> PeopleClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def inputs(
        self,
        images: Sequence[bytes],
        conf: float | None = None,
        iou: float | None = None,
        gender_threshold: float | None = None,
    ) -> list[Any]:
        """Request tensors; thresholds left as None take the server's defaults."""
        batch = pack(images)
        tensors = [self._input(spec.IMAGE, batch)]
        given = ((spec.CONF_THRESHOLD, conf), (spec.IOU_THRESHOLD, iou), (spec.GENDER_THRESHOLD, gender_threshold))
        for tensor, value in given:
            if value is not None:
                tensors.append(self._input(tensor, np.full((len(images), 1), value, dtype=np.float32)))
        return tensors

    def _input(self, tensor: spec.Tensor, value: np.ndarray) -> Any:
        i = self.client_module.InferInput(tensor.name, list(value.shape), tensor.dtype.value)
        i.set_data_from_numpy(value)
        return i

    def infer_raw(self, tier: str, inputs: list[Any], **kwargs: Any) -> dict[str, np.ndarray]:
        model = spec.tier(tier).model(spec.Step.ENSEMBLE)
        if self.protocol == "grpc":
            kwargs.setdefault("client_timeout", self.timeout_s)
        result = self.client.infer(model, inputs, headers=self.headers, **kwargs)
        return {t.name: result.as_numpy(t.name) for t in spec.ENSEMBLE_OUTPUTS}

    def detect(
        self,
        images: Sequence[bytes],
        tier: str = spec.DEFAULT_TIER,
        conf: float | None = None,
        iou: float | None = None,
        gender_threshold: float | None = None,
        **kwargs: Any,
    ) -> list[list[Person]]:
        """Persons in each image, sent as one request (fails as a whole if one image is bad)."""
        return unpack(self.infer_raw(tier, self.inputs(images, conf, iou, gender_threshold), **kwargs))


def annotate(path: Path, persons: list[Person], out_dir: Path) -> Path:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    for p in persons:
        x1, y1, x2, y2 = (round(v) for v in p.box)
        cv2.rectangle(image, (x1, y1), (x2, y2), (0, 200, 0), 2)
        cv2.putText(
            image,
            f"{p.cls}:{p.score:.2f} {p.gender_label or '?'}",
            (x1, max(y1 - 5, 12)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5,
            (0, 200, 0),
            1,
            cv2.LINE_AA,
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / path.name
    cv2.imwrite(str(target), image)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tools/client.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("images", nargs="+", type=Path, help="JPEG or PNG files")
    parser.add_argument("--tier", choices=spec.TIER_NAMES, default=spec.DEFAULT_TIER)
    parser.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    parser.add_argument(
        "--url", help=f"server address (default {spec.HOST}:{spec.GRPC_PORT} for gRPC, :{spec.HTTP_PORT} for HTTP)"
    )
    parser.add_argument(
        "--conf", type=float, help=f"person confidence threshold (server default {spec.DEFAULT_CONF_THRESHOLD})"
    )
    parser.add_argument("--iou", type=float, help=f"NMS IoU threshold (server default {spec.DEFAULT_IOU_THRESHOLD})")
    parser.add_argument(
        "--gender-threshold",
        type=float,
        help=f"below this probability gender is undetermined (server default {spec.DEFAULT_GENDER_THRESHOLD})",
    )
    parser.add_argument("--api-key", help="the key given to `make serve API_KEY=...`")
    parser.add_argument("--annotate", type=Path, metavar="DIR", help="write each image with its boxes drawn into DIR")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    url = args.url or f"{spec.HOST}:{spec.GRPC_PORT if args.protocol == 'grpc' else spec.HTTP_PORT}"
    client = PeopleClient(url, args.protocol, args.api_key)
    failures = 0
    for path in args.images:
        record: dict[str, Any] = {"image": str(path), "tier": args.tier}
        try:
            (persons,) = client.detect([path.read_bytes()], args.tier, args.conf, args.iou, args.gender_threshold)
        except (OSError, InferenceServerException) as e:
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
