"""The client side of the contract, used by every client here: requests, auth headers, results.

Only the encoded file's bytes travel; decoding, letterboxing, detection, NMS
and gender happen in the server. Boxes are x1, y1, x2, y2 in the original
image's pixels. Any Triton client works; this one packs several images into one
request, sends the optional thresholds, the API key in the header Triton
expects for the protocol, and turns the padded outputs into persons.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines import spec

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

    def infer_async(self, tier: str, inputs: list[Any], callback: Callable[[Any, Any], None]) -> None:
        """Send without waiting; `callback(result, error)` gets the answer on tritonclient's thread.

        gRPC only: the HTTP client's async_infer returns a handle to wait on instead of calling back.
        Requests sent one after another on one channel this way reach the server in that order.
        """
        if self.protocol != "grpc":
            raise ValueError("infer_async needs the gRPC client")
        model = spec.tier(tier).model(spec.Step.ENSEMBLE)
        self.client.async_infer(model, inputs, callback, headers=self.headers, client_timeout=self.timeout_s)

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
