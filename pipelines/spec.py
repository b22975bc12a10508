"""The one spec of the served pipeline: tensors, image geometry, defaults and tiers.

Every `config.pbtxt` under `model_repository/` is rendered from this module
(`make configs`), and the export, the DALI graph, the python-backend models,
the client and the tests read their numbers from here. Change a number here,
re-render, commit both.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

# --- Image geometry (Ultralytics LetterBox: auto=False, center=True) ---------
IMAGE_SIZE = 640  # square detector input, pixels
PAD_VALUE = 114  # letterbox border, as Ultralytics

# --- What the server accepts (checked from the header, before decoding) -------
# Baseline or progressive 8-bit JPEG, and PNG; EXIF orientation is applied.
MAX_IMAGE_BYTES = 16 << 20  # per image
MAX_IMAGE_SIDE = 8192  # pixels, width or height
MAX_IMAGE_PIXELS = 7680 * 4320  # 8K UHD: about 33 megapixels

# --- Detection defaults (Ultralytics `predict` defaults) ---------------------
DEFAULT_CONF_THRESHOLD = 0.25
DEFAULT_IOU_THRESHOLD = 0.7
MAX_DET = 300  # fixed length of the padded BOXES/SCORES/CLASSES outputs
MAX_NMS = 30000  # candidates kept before NMS, as Ultralytics
MAX_WH = 7680  # class offset for per-class NMS, as Ultralytics
AGNOSTIC_NMS = False  # per-class NMS, as Ultralytics' default

# --- Gender of each person (classified in the server, BLS from postprocess) ----
GENDER_LABELS = ("female", "male")  # GENDER values 0 and 1; the export maps the classifier's labels onto these
UNDETERMINED = -1  # GENDER when the crop is too small or the classifier is unsure
DEFAULT_GENDER_THRESHOLD = 0.6  # below this top probability a person is undetermined


class CropPolicy(str, Enum):
    """What part of each person the gender classifier sees; its manifest says which it was trained on."""

    FACE = "face"  # the face found by the face detector, aligned from its landmarks (the default classifier)
    HEAD = "head"  # a square around the head, derived from the person box (fallback)
    PERSON = "person"  # the whole person box (fallback)


# The head square's side before padding: the smaller of these fractions of the
# person box's width and height; it sits at the top of the box, centred.
HEAD_WIDTH_FRACTION = 0.5
HEAD_HEIGHT_FRACTION = 0.2
MIN_CROP_PX = 8  # head/person policies: persons whose crop side (before padding) is smaller are undetermined

# --- Faces (crop policy `face`) ------------------------------------------------
# The face detector runs on the top square of each person box (side min(box width, box height),
# centred), cut from the full-resolution image and resized to the face model's input size.
FACE_REGION_SIZE = 96  # pixels; the face model's input side (multiple of its stride), fixed at export
FACE_THRESHOLD = 0.5  # a face detector score below this is no face
MIN_FACE_PX = 16  # faces (and person regions) narrower or shorter than this are not classified
FACE_IOU = 0.5  # a face found for two persons of one image (IoU at least this) goes to one of them

# --- Threads and decoders ----------------------------------------------------------
# cpu variant: these machines have 2 cores. ONNX Runtime gets both, and each model has one
# instance, so steps of different requests overlap rather than fight.
CPU_THREADS = 2
# cpu variant's letterbox (OpenCV, one image after another): one thread. Its only parallel part is the
# resize (about 0.5 ms of the 4 ms an image takes here), and OpenCV's pool threads wait actively
# after each job (modules/core/src/parallel_impl.cpp), taking cores the detector fills under load.
CPU_PREPROCESS_THREADS = 1
# GPU variant's DALI (nvJPEG), measured on an H200 with the letterbox graph, batch 32 of 1080p JPEGs
# (docs/gpu.md, "Measured on an H200"): 4 CPU threads 1.4-1.9k images/s with the decoder's default share of JPEGs
# for the hardware decoder (0.9), 3.05k with all of them (1.0); 16 threads 3.8k at 0.9. With the whole
# share on the hardware engine (A100, H100, H200) the threads only parse and feed it, and 4 per tier keep
# up with the detector (about 3k images/s at batch 32 there) while three tiers stay within the gpu pod's
# 8 cores; 16 per tier would ask for 48. PNG, progressive JPEG and GPUs without the engine fall back to
# the CUDA decoder, which uses these threads for its CPU part.
GPU_DALI_THREADS = 4
GPU_HW_DECODER_LOAD = 1.0
# nvJPEG upsamples chroma its own way unless told to do it as libjpeg-turbo does (DALI's
# `jpeg_fancy_upsampling`: "Make the mixed backend use the same chroma upsampling approach as the cpu
# one", DALI PR #4662; present in DALI 2.1, the serving image's). Ultralytics reads images with
# libjpeg-turbo (cv2): with it off, letterboxed pixels were up to 33/255 apart and boxes 4.2 px on an
# H200 (docs/gpu.md); `make gpu-check` measures the gap both ways. Whether the hardware engine honours
# it is not documented: DALI passes the flag to the hardware decoder's nvJPEG handle too.
GPU_JPEG_FANCY_UPSAMPLING = True


class DType(str, Enum):
    """Triton data types used here (the `TYPE_` suffix of model_config.proto)."""

    UINT8 = "UINT8"
    INT32 = "INT32"
    INT64 = "INT64"
    FP32 = "FP32"


@dataclass(frozen=True)
class Tensor:
    """A named tensor without the batch dimension."""

    name: str
    dtype: DType
    dims: tuple[int, ...]
    optional: bool = False


# --- Ensemble contract: identical for every tier -----------------------------
IMAGE = Tensor("IMAGE", DType.UINT8, (-1,))  # encoded image bytes, ragged
CONF_THRESHOLD = Tensor("CONF_THRESHOLD", DType.FP32, (1,), optional=True)
IOU_THRESHOLD = Tensor("IOU_THRESHOLD", DType.FP32, (1,), optional=True)
NUM_DETECTIONS = Tensor("NUM_DETECTIONS", DType.INT32, (1,))
BOXES = Tensor("BOXES", DType.FP32, (MAX_DET, 4))  # x1, y1, x2, y2 in original pixels
SCORES = Tensor("SCORES", DType.FP32, (MAX_DET,))
CLASSES = Tensor("CLASSES", DType.INT32, (MAX_DET,))
GENDER_THRESHOLD = Tensor("GENDER_THRESHOLD", DType.FP32, (1,), optional=True)
GENDER = Tensor("GENDER", DType.INT32, (MAX_DET,))  # 0 female, 1 male, -1 undetermined
GENDER_SCORES = Tensor("GENDER_SCORES", DType.FP32, (MAX_DET,))  # classifier's top probability, 0 if not run
FACES = Tensor("FACES", DType.FP32, (MAX_DET, 4))  # face box of each person in original pixels, zeros if none

# The track tier's answer adds, per person, the id of its track on the camera (the request's sequence)
# and the gender voted over the track's frames (pipelines/tracking).
TRACK_IDS = Tensor("TRACK_IDS", DType.INT64, (MAX_DET,))  # -1 where a person has no track (yet)
TRACK_GENDER = Tensor("TRACK_GENDER", DType.INT32, (MAX_DET,))  # as GENDER: -1 until a face was read
TRACK_GENDER_SCORES = Tensor("TRACK_GENDER_SCORES", DType.FP32, (MAX_DET,))  # the vote's score, 0 until then

ENSEMBLE_INPUTS = (IMAGE, CONF_THRESHOLD, IOU_THRESHOLD, GENDER_THRESHOLD)
# The optional per-image thresholds and the value the server applies when a request omits one.
THRESHOLDS = (
    (CONF_THRESHOLD, DEFAULT_CONF_THRESHOLD),
    (IOU_THRESHOLD, DEFAULT_IOU_THRESHOLD),
    (GENDER_THRESHOLD, DEFAULT_GENDER_THRESHOLD),
)
ENSEMBLE_OUTPUTS = (NUM_DETECTIONS, BOXES, SCORES, CLASSES, GENDER, GENDER_SCORES, FACES)
TRACK_OUTPUTS = (TRACK_IDS, TRACK_GENDER, TRACK_GENDER_SCORES)

# --- Tensors between the steps -------------------------------------------------
# Letterboxed RGB, CHW, scaled to [0, 1]: the detector's input, named at export.
IMAGES = Tensor("IMAGES", DType.FP32, (3, IMAGE_SIZE, IMAGE_SIZE))
# What the letterbox did, so postprocess can undo it exactly:
# [pad_left, pad_top, resized_w, resized_h, original_w, original_h].
GEOMETRY = Tensor("GEOMETRY", DType.FP32, (6,))
# Raw detector head [4 + num_classes, anchors], named at export. The sizes depend
# on the weights and the image size, so they stay dynamic in the configs.
PREDICTIONS = Tensor("PREDICTIONS", DType.FP32, (-1, -1))
# The decoded RGB image at full resolution, for the person crops. Zero-padded to
# the largest image of the batch; GEOMETRY holds each image's own size.
ORIGINAL = Tensor("ORIGINAL", DType.UINT8, (-1, -1, 3))
# The gender classifier's input (normalized crops, CHW) and output; sizes come from its manifest.
CROPS = Tensor("CROPS", DType.FP32, (3, -1, -1))
PROBABILITIES = Tensor("PROBABILITIES", DType.FP32, (-1,))
# The face detector's input (the top square of each person, RGB 0-255, CHW) and its raw maps at stride 4:
# heatmap, box size (2), offset (2), five landmarks (10) stacked on the channel axis (sizes from its manifest).
FACE_REGIONS = Tensor("FACE_REGIONS", DType.FP32, (3, -1, -1))
FACE_MAPS = Tensor("FACE_MAPS", DType.FP32, (15, -1, -1))
# The request's admission ticket (pipelines.admission), from preprocess straight to postprocess, which
# hands it back when it answers; the same number on every image of a request.
TICKET = Tensor("TICKET", DType.INT64, (1,))
# The track tier's postprocess to its tracker: every box the NMS kept down to TRACK_DETECTION_CONF, best
# first, as x1, y1, x2, y2 (original pixels) and score; rows past the last box are zeros. The answer's
# boxes (score above CONF_THRESHOLD) are its first NUM_DETECTIONS rows.
CANDIDATES = Tensor("CANDIDATES", DType.FP32, (MAX_DET, 5))


class Step(str, Enum):
    """The models every tier is made of; the value prefixes the model name."""

    PREPROCESS = "preprocess"
    DETECTOR = "detector"
    POSTPROCESS = "postprocess"
    GENDER = "gender"  # called by postprocess (BLS), not a step of the ensemble
    FACE = "face"  # called by postprocess (BLS), not a step of the ensemble
    TRACKER = "tracker"  # the track tier's last step: the tracks of each camera
    ENSEMBLE = "people"


STEP_INPUTS: dict[Step, tuple[Tensor, ...]] = {
    Step.PREPROCESS: (IMAGE,),
    Step.DETECTOR: (IMAGES,),
    Step.POSTPROCESS: (PREDICTIONS, GEOMETRY, ORIGINAL, TICKET, CONF_THRESHOLD, IOU_THRESHOLD, GENDER_THRESHOLD),
    Step.GENDER: (CROPS,),
    Step.FACE: (FACE_REGIONS,),
    Step.TRACKER: (NUM_DETECTIONS, CANDIDATES, GENDER, GENDER_SCORES),
}
STEP_OUTPUTS: dict[Step, tuple[Tensor, ...]] = {
    Step.PREPROCESS: (IMAGES, GEOMETRY, ORIGINAL, TICKET),
    Step.DETECTOR: (PREDICTIONS,),
    Step.POSTPROCESS: ENSEMBLE_OUTPUTS,
    Step.GENDER: (PROBABILITIES,),
    Step.FACE: (FACE_MAPS,),
    Step.TRACKER: TRACK_OUTPUTS,
}
PIPELINE = (Step.PREPROCESS, Step.DETECTOR, Step.POSTPROCESS)  # every tier's ensemble steps, in order
# The models that run as TensorRT engines on the GPU variant (ONNX Runtime on the cpu variant).
ENGINES = (Step.DETECTOR, Step.GENDER, Step.FACE)
MODELS = (*PIPELINE, Step.GENDER, Step.FACE)  # the models every tier has besides the ensemble


class Variant(str, Enum):
    """Where the models run. Each model has one config per variant, rendered from this spec."""

    GPU = "gpu"  # config.pbtxt: python on GPU tensors (preprocess: DALI, nvJPEG), TensorRT plans (the product)
    CPU = "cpu"  # configs/cpu.pbtxt: python backend (OpenCV letterbox in preprocess), ONNX Runtime

    @property
    def config_name(self) -> str | None:
        """`tritonserver --model-config-name`; None: the default `config.pbtxt`."""
        return None if self is Variant.GPU else self.value


VARIANTS = tuple(Variant)


class TimeoutAction(str, Enum):
    REJECT = "REJECT"
    DELAY = "DELAY"


@dataclass(frozen=True)
class Batching:
    """Dynamic batching of every step of one tier on one variant.

    The queue size, timeout and action apply where the tier admits requests: its first step
    (preprocess), before any work is spent on them. The later steps never refuse what the tier
    admitted; `max_in_flight` bounds what waits there (pipelines.admission).
    """

    max_batch_size: int
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int
    max_queue_size: int
    timeout_action: TimeoutAction
    queue_timeout_us: int
    instances: int
    preserve_ordering: bool = False
    priority_levels: int = 0  # 0: no priorities; Triton forbids them with preserve_ordering
    # How long preprocess holds a batch for room in the tier before refusing it (None: as long as it
    # takes, DELAY tiers). It is part of queue_timeout_us: a REJECT tier's queue keeps a request for the
    # rest, so a request is refused at most queue_timeout_us after it came. 0 for a live camera's tier:
    # a frame that finds the tier full is refused at once rather than admitted late (docs/serving.md).
    admission_wait_us: int | None = None
    # Batches per instance admitted past preprocess and not yet answered (pipelines.admission): what
    # waits inside a tier, decoded. Two keep the detector busy (one in it, the next letterboxed
    # meanwhile) and a live camera's frames fresh; more answer a little more under overload and keep
    # answered requests longer (measured: docs/serving.md).
    in_flight_batches: int = 2

    @property
    def queue_wait_us(self) -> int:
        """What Triton's queue policy at preprocess allows: the tier's timeout less the admission wait."""
        return self.queue_timeout_us - (self.admission_wait_us or 0)

    @property
    def max_in_flight(self) -> int:
        """Images admitted past preprocess and not yet answered, per GPU (or per cpu server)."""
        return self.in_flight_batches * self.max_batch_size * self.instances


@dataclass(frozen=True)
class Tier:
    name: str
    purpose: str
    gpu: Batching
    cpu: Batching
    tracks: bool = False  # a tracker step after postprocess: person ids per camera (see TRACKING)

    def model(self, step: Step) -> str:
        return f"{step.value}_{self.name}"

    def batching(self, variant: Variant) -> Batching:
        return self.gpu if variant is Variant.GPU else self.cpu

    @property
    def steps(self) -> tuple[Step, ...]:
        """The ensemble's steps, in order."""
        return (*PIPELINE, Step.TRACKER) if self.tracks else PIPELINE

    @property
    def models(self) -> tuple[Step, ...]:
        """Every model of the tier besides the ensemble."""
        return (*MODELS, Step.TRACKER) if self.tracks else MODELS

    @property
    def outputs(self) -> tuple[Tensor, ...]:
        """What the tier's ensemble answers."""
        return (*ENSEMBLE_OUTPUTS, *TRACK_OUTPUTS) if self.tracks else ENSEMBLE_OUTPUTS

    @property
    def answers(self) -> Step:
        """The step whose responses are the tier's answers (it publishes ANSWERED_METRIC)."""
        return self.steps[-1]

    def step_outputs(self, step: Step) -> tuple[Tensor, ...]:
        if step is Step.POSTPROCESS and self.tracks:
            return (*STEP_OUTPUTS[step], CANDIDATES)
        return STEP_OUTPUTS[step]


# Small batches that form within 100 us; a request that waited 50 ms is stale for a live camera and is
# rejected (UNAVAILABLE) rather than queued. Responses in request order, which also brings a camera's
# frames to the track tier's tracker in the order they came. The track tier shares these batch sizes;
# its first step is Triton's sequence batcher, which has no queue limit or timeout (see Tracking).
STREAMING_GPU = Batching(
    max_batch_size=8,
    preferred_batch_sizes=(1, 2, 4),
    max_queue_delay_us=100,
    max_queue_size=16,
    timeout_action=TimeoutAction.REJECT,
    queue_timeout_us=50_000,
    instances=2,
    preserve_ordering=True,
    admission_wait_us=0,
)
# One yolo image takes ~100 ms on 2 cores: a longer timeout, a shorter queue.
STREAMING_CPU = Batching(
    max_batch_size=4,
    preferred_batch_sizes=(1, 2),
    max_queue_delay_us=100,
    max_queue_size=8,
    timeout_action=TimeoutAction.REJECT,
    queue_timeout_us=2_000_000,
    instances=1,
    preserve_ordering=True,
    admission_wait_us=0,
)

TIERS = (
    Tier(
        name="streaming",
        purpose="lowest latency, responses in request order",
        gpu=STREAMING_GPU,
        cpu=STREAMING_CPU,
    ),
    Tier(
        name="balanced",
        purpose="the default: good throughput at moderate latency, two priority levels",
        gpu=Batching(
            max_batch_size=32,
            preferred_batch_sizes=(4, 8, 16, 32),
            max_queue_delay_us=500,
            max_queue_size=64,
            timeout_action=TimeoutAction.REJECT,
            queue_timeout_us=1_000_000,
            instances=1,
            priority_levels=2,
            admission_wait_us=500_000,
            in_flight_batches=3,  # the queue of 64 and a batch of 32, as the inner steps held
        ),
        cpu=Batching(
            max_batch_size=8,
            preferred_batch_sizes=(4, 8),
            max_queue_delay_us=2_000,
            max_queue_size=32,
            timeout_action=TimeoutAction.REJECT,
            queue_timeout_us=10_000_000,
            instances=1,
            priority_levels=2,
            admission_wait_us=5_000_000,
            # 24 images: about the 10 s timeout's worth of work on 2 loaded cores (2.4-2.6 answers/s
            # under 3x overload); the 40 the inner steps used to hold answered a few % more but kept
            # answered requests 17 s (docs/serving.md).
            in_flight_batches=3,
        ),
    ),
    Tier(
        name="batch",
        purpose="throughput for archives: large batches, requests wait (DELAY) rather than fail",
        gpu=Batching(
            max_batch_size=128,
            preferred_batch_sizes=(32, 64, 128),
            max_queue_delay_us=5_000,
            max_queue_size=256,
            timeout_action=TimeoutAction.DELAY,
            queue_timeout_us=10_000_000,
            instances=1,
            in_flight_batches=3,  # the queue of 256 and a batch of 128, as the inner steps held
        ),
        # Batches of 8-16 already saturate 2 cores; larger ones only add latency.
        cpu=Batching(
            max_batch_size=16,
            preferred_batch_sizes=(8, 16),
            max_queue_delay_us=10_000,
            max_queue_size=64,
            timeout_action=TimeoutAction.DELAY,
            queue_timeout_us=60_000_000,
            instances=1,
            in_flight_batches=5,  # the queue of 64 and a batch of 16, as the inner steps held
        ),
    ),
    # Video with a stable id per person: streaming's batching (its order is what keeps a camera's frames
    # in order up to the tracker), a tracker step, and sequences (one per camera) on every request.
    Tier(
        name="track",
        purpose="video: streaming plus a stable id and a voted gender per person, per camera (sequences)",
        gpu=STREAMING_GPU,
        cpu=STREAMING_CPU,
        tracks=True,
    ),
)
TIER_NAMES = tuple(t.name for t in TIERS)
IMAGE_TIER_NAMES = tuple(t.name for t in TIERS if not t.tracks)  # tiers that answer any image alone, no sequence

# The gender classifier of every tier. Its callers (postprocess, BLS) are already
# bounded by their tier's queue, so it has no queue limit or timeout of its own;
# max_batch_size is the chunk size of postprocess's BLS calls.
GENDER_BATCHING = {
    Variant.GPU: Batching(
        max_batch_size=256,
        preferred_batch_sizes=(),
        max_queue_delay_us=100,
        max_queue_size=0,
        timeout_action=TimeoutAction.REJECT,
        queue_timeout_us=0,
        instances=1,
    ),
    # Small, so a handful of crowded images already exercises the chunking.
    Variant.CPU: Batching(
        max_batch_size=32,
        preferred_batch_sizes=(),
        max_queue_delay_us=100,
        max_queue_size=0,
        timeout_action=TimeoutAction.REJECT,
        queue_timeout_us=0,
        instances=1,
    ),
}
# The face detector is called like the classifier (BLS from postprocess, one call per chunk of person
# regions), so it takes the same batching.
FACE_BATCHING = GENDER_BATCHING
# The models postprocess calls through BLS (not steps of the ensemble), and the batching each takes.
BLS_BATCHING = {Step.GENDER: GENDER_BATCHING, Step.FACE: FACE_BATCHING}
DEFAULT_TIER = "balanced"


@dataclass(frozen=True)
class Tracking:
    """The track tier's cameras on one variant.

    Its preprocess takes each camera as a Triton sequence (sequence batcher, Oldest: frames of different
    cameras batch together, each camera's in order): a request needs the camera's id as its sequence id
    and sequence_start on its first frame, and Triton refuses it before any work otherwise. At most
    `cameras` cameras at once (pipelines.cameras): the next one to start is refused with a clear error.
    Triton keeps a refused camera's slot until it ends its sequence or idles, so its slots are twice as
    many per preprocess instance: a new camera waits in Triton's backlog only once more refused cameras
    than that keep retrying. A camera silent for `idle_timeout_us` is forgotten by Triton, preprocess and
    the tracker alike. The tracker, last, keeps each camera's tracks in its one instance, keyed by the
    camera's id; every step between keeps the order in which the frames came (preserve_ordering), so a
    camera's frames reach it in order.
    """

    cameras: int
    max_batch_size: int  # frames of different cameras in one execution of the tracker
    max_queue_delay_us: int
    idle_timeout_us: int

    @property
    def candidate_sequences(self) -> int:
        """Triton's sequence slots per preprocess instance."""
        return 2 * self.cameras


# The tracker is numpy in one python model on one CPU core: about 5 ms of compute per frame under load on
# the project's 2-core machine (docs/tracking.md, "Limits"), so it keeps up with about 190 frames/s in all.
TRACKING = {
    Variant.GPU: Tracking(cameras=64, max_batch_size=16, max_queue_delay_us=100, idle_timeout_us=60_000_000),
    Variant.CPU: Tracking(cameras=16, max_batch_size=4, max_queue_delay_us=100, idle_timeout_us=60_000_000),
}


@dataclass(frozen=True)
class ByteTrack:
    """The tracker's settings; field names and defaults are those of Ultralytics' cfg/trackers/bytetrack.yaml."""

    track_high_thresh: float = 0.25  # boxes scoring at least this take part in the first association
    track_low_thresh: float = 0.1  # boxes scoring above this (and under the high one) in the second
    new_track_thresh: float = 0.25  # an unmatched box starts a track from this score
    track_buffer: int = 30  # frames a lost track waits to be found again
    match_thresh: float = 0.8  # first association: a pair costing this or more is never matched
    fuse_score: bool = True  # first and unconfirmed associations: cost 1 - IoU * score instead of 1 - IoU


BYTETRACK = ByteTrack()
# The detection threshold `model.track` applies (ultralytics/engine/model.py) so the second association
# sees low-score boxes: the tracker is fed every box the NMS keeps at this score (or at the request's
# CONF_THRESHOLD when lower), while the answer keeps CONF_THRESHOLD (its boxes are the first ones of the
# same list: NMS output is by score).
TRACK_DETECTION_CONF = 0.1


def tier(name: str) -> Tier:
    """The tier called `name`, or a ValueError that lists the valid names."""
    for t in TIERS:
        if t.name == name:
            return t
    raise ValueError(f"unknown tier {name!r}; choose one of {', '.join(TIER_NAMES)}")


# --- Serving -------------------------------------------------------------------
# Draining before a stop (cpu variant, local server): the launcher sends one request carrying the
# parameter DRAIN_PARAMETER = the secret it put in the server's environment (DRAIN_TOKEN_ENV)
# straight to each tier's preprocess model. It queues behind every request that reached the
# tier before it; preprocess answers those as usual and refuses every request after it with
# UNAVAILABLE. That cut needs one preprocess instance per tier (one queue, served in order).
DRAIN_TOKEN_ENV = "PEOPLE_DRAIN_TOKEN"
DRAIN_PARAMETER = "people_drain"
DRAINING_MESSAGE = "the server is draining before it stops: send the request to another replica"
# A REJECT tier whose images in flight left no room for a request within its queue timeout.
TIER_FULL_MESSAGE = "the tier is at capacity: retry later, use another tier or another replica"
# A ticket outstanding this long belongs to a request that left the tier without postprocess's
# answer (cancelled by its client between steps, or failed at the detector): its room is taken back.
# Far above the longest a request spends past preprocess (three batches of the slowest tier, about
# 10 s on a loaded 2-core machine).
TICKET_LOST_AFTER_S = 60.0
# Counters the python models publish on Triton's metrics endpoint, so a drain can tell
# how many requests are inside a tier (Triton's pending count leaves out executing ones).
ADMITTED_METRIC = "people_admitted_total"  # requests preprocess passed on, per preprocess model
ANSWERED_METRIC = "people_answered_total"  # responses postprocess sent, per postprocess model
HOST = "127.0.0.1"  # loopback unless the user asks otherwise
HTTP_PORT = 8000
GRPC_PORT = 8001
METRICS_PORT = 8002
# Flags every server of ours runs with, local or in the image (Dockerfile.triton's ENTRYPOINT holds
# the same): no model loading over the API, not ready until every model is, a failed model stops
# the server, and at most EXIT_TIMEOUT_S to finish what is in flight on SIGTERM. The launcher's drain
# before that SIGTERM gives up after as long without progress (tools/server/triton.py, Server.drain).
EXIT_TIMEOUT_S = 30
IMAGE_REPOSITORY = "/models"  # where the serving image's server reads its (mounted) model repository
SERVER_FLAGS = (
    "--model-control-mode=none",
    "--strict-readiness=true",
    "--exit-on-error=true",
    f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
)
# The GPU variant's tensors between steps (ORIGINAL above all: the decoded images at full size)
# come from Triton's CUDA memory pool; when it is full they fall back to pinned, then ordinary host
# memory (core src/memory.cc, AllocatedMemory), and postprocess would get host tensors. The pool
# holds one largest batch of the largest tier at the largest accepted image, per GPU (Triton's
# default is 64 MB: `--cuda-memory-pool-byte-size`, server src/command_line_parser.cc).
CUDA_MEMORY_POOL_BYTES = max(t.gpu.max_batch_size for t in TIERS) * MAX_IMAGE_PIXELS * 3


def cuda_pool_flag(gpu: int) -> str:
    """The serving command line's pool for one GPU (`make serve` passes one per GPU, the gpu pod one)."""
    return f"--cuda-memory-pool-byte-size={gpu}:{CUDA_MEMORY_POOL_BYTES}"
# The GPU the gpu pod asks for (its GPU Feature Discovery label, nvidia.com/gpu.product) where no
# TensorRT plans were built here; `make k8s-manifests` takes the GPU the plans record instead, as
# plans load only on the GPU type they were built for.
GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"
# With an API key, clients send it in this HTTP header; over gRPC, Triton expects the header with
# its protocol prefix (`--grpc-restricted-protocol` docs in Triton's command line).
API_KEY_HEADER = "x-api-key"
GRPC_API_KEY_HEADER = f"triton-grpc-protocol-{API_KEY_HEADER}"
