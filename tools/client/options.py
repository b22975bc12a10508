"""The options every client command line shares: the thresholds a request may carry.

Unset, a threshold is the server's default (the spec's, shown in the help). The names are the keywords
of `PeopleClient.detect`, `request_inputs` and `StreamOptions`, in `spec.THRESHOLDS`' order.
"""

from __future__ import annotations

import argparse

from pipelines import spec

THRESHOLDS = {
    "conf": "person confidence threshold",
    "iou": "NMS IoU threshold",
    "gender_threshold": "below this probability gender is undetermined",
}
assert len(THRESHOLDS) == len(spec.THRESHOLDS), "a threshold of the spec has no option"


def add_thresholds(parser: argparse.ArgumentParser, applies: str = "") -> None:
    """--conf, --iou and --gender-threshold; `applies` says to what, where it is not the one request."""
    for (name, what), (_, default) in zip(THRESHOLDS.items(), spec.THRESHOLDS, strict=True):
        help = f"{what}{applies} (server default {default})"
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, help=help)


def thresholds(args: argparse.Namespace) -> dict[str, float | None]:
    """The thresholds given on the command line, by keyword (None: the server's default)."""
    return {name: getattr(args, name) for name in THRESHOLDS}
