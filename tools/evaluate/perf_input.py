"""perf_analyzer's `--input-data` file from a folder of your own JPEGs (or PNGs).

perf_analyzer fills inputs with random bytes unless it is given data, and random bytes never decode: every
request would be refused. This writes `{"data": [{"IMAGE": {"b64": ..., "shape": [bytes]}}, ...]}`, one
entry per image, which perf_analyzer sends in turn. Each file is checked as the server checks it
(`pipelines/validate.py`), so an image the server would refuse is named here instead of in a benchmark.

    .venv/bin/python -m tools.evaluate.perf_input my_photos/ -o input.json --limit 100
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import sys
from pathlib import Path

from pipelines import spec, validate

log = logging.getLogger("perf_input")


def input_data(path: Path, images: list[bytes]) -> Path:
    """Write perf_analyzer's --input-data for these encoded images to `path`."""
    entries = [{spec.IMAGE.name: {"b64": base64.b64encode(i).decode(), "shape": [len(i)]}} for i in images]
    path.write_text(json.dumps({"data": entries}))
    return path


def read_folder(folder: Path, limit: int | None = None) -> list[bytes]:
    """The folder's images in name order (hidden files and subfolders skipped), at most `limit` of them.

    ValueError names the folder when it holds no file, and every file the server would refuse, with why.
    """
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))[:limit]
    if not files:
        raise ValueError(f"{folder} holds no files: put the JPEGs to send in it")
    images, refused = [], []
    for path in files:
        data = path.read_bytes()
        try:
            validate.check(data)
        except validate.InvalidImage as e:
            refused.append(f"  {path.name}: {e}")
        images.append(data)
    if refused:
        raise ValueError(f"the server would refuse {len(refused)} of {len(files)} files in {folder}:\n"
                         + "\n".join(refused))  # fmt: skip
    return images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.evaluate.perf_input", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("folder", type=Path, help="a folder of JPEG (or PNG) files; nothing else in it")
    parser.add_argument("-o", "--output", type=Path, default=Path("input.json"),
                        help="the file to write (default: input.json)")  # fmt: skip
    parser.add_argument("--limit", type=int, help="only the first N files by name (each is base64 in the file)")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    try:
        images = read_folder(args.folder, args.limit)
    except ValueError as e:
        parser.error(str(e))
    input_data(args.output, images)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log.info("%s: %d images, %d bytes (perf_analyzer --input-data %s)", args.output, len(images),
             sum(map(len, images)), args.output)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
