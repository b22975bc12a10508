"""The client side of the contract, used by every client here: requests, auth headers, results.

Only the encoded file's bytes travel; decoding, letterboxing, detection, NMS
and gender happen in the server. Boxes are x1, y1, x2, y2 in the original
image's pixels. Any Triton client works; this one packs several images into one
request, sends the optional thresholds, the API key in the header Triton
expects for the protocol, and turns the padded outputs into persons.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines import spec

log = logging.getLogger("client")


Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in the original image's pixels


UNDETERMINED_LABEL = "undetermined"


def gender_label(gender: int) -> str | None:
    """`female` or `male` for a GENDER value, None for undetermined."""
    return spec.GENDER_LABELS[gender] if gender != spec.UNDETERMINED else None


def gender_counts(genders: Iterable[int]) -> dict[str, int]:
    """How many of each GENDER value: `female`, `male`, `undetermined`."""
    counts = dict.fromkeys((*spec.GENDER_LABELS, UNDETERMINED_LABEL), 0)
    for gender in genders:
        counts[gender_label(gender) or UNDETERMINED_LABEL] += 1
    return counts


@dataclass(frozen=True)
class Person:
    """One person of an answer. The track fields are None where the tier does not track (spec.Tier.tracks)."""

    box: Box
    score: float
    cls: int
    gender: int  # 0 female, 1 male, -1 undetermined (spec.GENDER_LABELS)
    gender_score: float
    face: Box | None = None  # the face box the server found for the person; None where it found none
    track_id: int | None = None  # the person's id on the camera, from 1; -1 where it has no track yet
    track_gender: int | None = None  # the gender voted over the track, as `gender`: -1 until a face was read
    track_gender_score: float | None = None

    @property
    def gender_label(self) -> str | None:
        return gender_label(self.gender)

    @property
    def tracked(self) -> bool:
        """The person has an id on the camera: a tier that tracks, past the person's first frame."""
        return self.track_id is not None and self.track_id >= 0

    @property
    def shown_gender(self) -> tuple[int, float]:
        """The gender to show a reader and its score: the track's vote once tracked, else this frame's."""
        if self.tracked:
            assert self.track_gender is not None and self.track_gender_score is not None
            return self.track_gender, self.track_gender_score
        return self.gender, self.gender_score

    def as_json(self) -> dict[str, Any]:
        """The person as the clients print it: `face` always (null where none), the track fields where tracked."""
        face = None if self.face is None else list(self.face)
        record = {"box": list(self.box), "score": self.score, "class": self.cls, "gender": self.gender_label,
                  "gender_score": self.gender_score, "face": face}  # fmt: skip
        if self.track_id is not None:
            assert self.track_gender is not None
            record |= {"track_id": self.track_id, "track_gender": gender_label(self.track_gender),
                       "track_gender_score": self.track_gender_score}  # fmt: skip
        return record


def pack(images: Sequence[bytes]) -> np.ndarray:
    """Encoded images as one [N, L] uint8 batch, zero-padded to the longest (decoders ignore the tail)."""
    longest = max(len(i) for i in images)
    batch = np.zeros((len(images), longest), dtype=np.uint8)
    for row, data in zip(batch, images, strict=False):
        row[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    return batch


def _tensor(client_module: Any, tensor: spec.Tensor, value: np.ndarray) -> Any:
    """One request tensor of `tritonclient.grpc` or `.http`, holding `value`."""
    given = client_module.InferInput(tensor.name, list(value.shape), tensor.dtype.value)
    given.set_data_from_numpy(value)
    return given


def image_inputs(client_module: Any, images: Sequence[bytes]) -> list[Any]:
    """The request's IMAGE tensor: the encoded images, packed."""
    return [_tensor(client_module, spec.IMAGE, pack(images))]


def threshold_inputs(
    client_module: Any,
    batch: int,
    conf: float | None = None,
    iou: float | None = None,
    gender_threshold: float | None = None,
    send_defaults: bool = True,
) -> list[Any]:
    """The threshold tensors of a request of `batch` images; the same for every request of that size, so a
    client sending many may build them once (tritonclient copies them into each request).

    A threshold left as None is sent with the server's default (the spec's), unless `send_defaults`
    is False (then the server applies it). Sending all three keeps requests batchable together:
    Triton batches only requests with the same set of inputs (triton-inference-server/common PR #35),
    so a request without a threshold tensor never shares postprocess's execution with one that has it.
    """
    tensors = []
    for (tensor, default), value in zip(spec.THRESHOLDS, (conf, iou, gender_threshold), strict=True):
        if value is None and send_defaults:
            value = default
        if value is not None:
            tensors.append(_tensor(client_module, tensor, np.full((batch, 1), value, dtype=np.float32)))
    return tensors


def request_inputs(
    client_module: Any,
    images: Sequence[bytes],
    conf: float | None = None,
    iou: float | None = None,
    gender_threshold: float | None = None,
    send_defaults: bool = True,
) -> list[Any]:
    """The request's tensors for `tritonclient.grpc` or `.http`: IMAGE, then the thresholds (threshold_inputs)."""
    thresholds = threshold_inputs(client_module, len(images), conf, iou, gender_threshold, send_defaults)
    return [*image_inputs(client_module, images), *thresholds]


def auth_headers(protocol: str, api_key: str | None) -> dict[str, str] | None:
    """The API key as Triton checks it: the HTTP header as given, the gRPC one with its protocol prefix."""
    if not api_key:
        return None
    return {spec.API_KEY_HEADER if protocol == "http" else spec.GRPC_API_KEY_HEADER: api_key}


def outputs(result: Any) -> dict[str, np.ndarray]:
    """The ensemble's output tensors of a gRPC or HTTP InferResult, by name (what `unpack` reads); the track
    tier's TRACK_* too where the answer has them."""
    found = {t.name: result.as_numpy(t.name) for t in (*spec.ENSEMBLE_OUTPUTS, *spec.TRACK_OUTPUTS)}
    return {name: value for name, value in found.items() if value is not None}


def _box(values: np.ndarray) -> Box:
    return tuple(round(float(v), 2) for v in values)  # type: ignore[return-value]


def _person(image: dict[str, np.ndarray], k: int, tracked: bool) -> Person:
    """Row `k` of one image's outputs (`tracked`: TRACK_* are among them)."""
    face = image[spec.FACES.name][k]
    track = {}
    if tracked:
        track = {"track_id": int(image[spec.TRACK_IDS.name][k]), "track_gender": int(image[spec.TRACK_GENDER.name][k]),
                 "track_gender_score": round(float(image[spec.TRACK_GENDER_SCORES.name][k]), 4)}  # fmt: skip
    return Person(
        box=_box(image[spec.BOXES.name][k]),
        score=round(float(image[spec.SCORES.name][k]), 4),
        cls=int(image[spec.CLASSES.name][k]),
        gender=int(image[spec.GENDER.name][k]),
        gender_score=round(float(image[spec.GENDER_SCORES.name][k]), 4),
        face=_box(face) if face.any() else None,
        **track,
    )


def unpack(outputs: dict[str, np.ndarray]) -> list[list[Person]]:
    """The padded ensemble outputs as a list of persons per image; the track fields where TRACK_* are present."""
    tracked = all(t.name in outputs for t in spec.TRACK_OUTPUTS)
    result = []
    for i, n in enumerate(outputs[spec.NUM_DETECTIONS.name][:, 0]):
        image = {name: value[i] for name, value in outputs.items()}
        result.append([_person(image, k, tracked) for k in range(int(n))])
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
        self.headers = auth_headers(protocol, api_key)
        self.timeout_s = timeout_s

    def close(self) -> None:
        """Close the connections (an open HTTP keep-alive connection delays Triton's shutdown)."""
        self.client.close()

    def __enter__(self) -> PeopleClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def inputs(self, images: Sequence[bytes], **thresholds: Any) -> list[Any]:
        """Request tensors for this client's protocol (see threshold_inputs for the thresholds)."""
        return request_inputs(self.client_module, images, **thresholds)

    def infer_raw(self, tier: str, inputs: list[Any], **kwargs: Any) -> dict[str, np.ndarray]:
        model = spec.tier(tier).model(spec.Step.ENSEMBLE)
        if self.protocol == "grpc":
            kwargs.setdefault("client_timeout", self.timeout_s)
        result = self.client.infer(model, inputs, headers=self.headers, **kwargs)
        return outputs(result)

    def infer_async(self, tier: str, inputs: list[Any], callback: Callable[[Any, Any], None], **kwargs: Any) -> None:
        """Send without waiting; `callback(result, error)` gets the answer on tritonclient's thread.

        gRPC only: the HTTP client's async_infer returns a handle to wait on instead of calling back.
        `kwargs` go to tritonclient's async_infer (a sequence's: `Flags.kwargs()`). Separate calls may reach
        the server in any order: send a camera's next frame once the one before is answered, or use a
        stream (docs/tracking.md, "Order").
        """
        if self.protocol != "grpc":
            raise ValueError("infer_async needs the gRPC client")
        model = spec.tier(tier).model(spec.Step.ENSEMBLE)
        self.client.async_infer(model, inputs, callback, headers=self.headers, client_timeout=self.timeout_s,
                                **kwargs)  # fmt: skip

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
        inputs = self.inputs(images, conf=conf, iou=iou, gender_threshold=gender_threshold)
        return unpack(self.infer_raw(tier, inputs, **kwargs))

    def track(
        self,
        image: bytes,
        tier: str,
        camera: str | int,
        start: bool = False,
        end: bool = False,
        **thresholds: float | None,
    ) -> list[Person]:
        """Persons in one frame of a camera, sent to a tier that tracks as a frame of the camera's sequence
        (its id: the camera's; `start` on its first frame, `end` on its last; see docs/tracking.md)."""
        inputs = self.inputs([image], **thresholds)
        (persons,) = unpack(self.infer_raw(tier, inputs, sequence_id=camera, sequence_start=start, sequence_end=end))
        return persons
