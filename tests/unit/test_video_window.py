"""The video client's frame-order window, alone: no server."""

from __future__ import annotations

import pytest

from tools.client.video.media import FrameResult
from tools.client.video.window import Stats, Window


def test_window_holds_early_answers_in_frame_order() -> None:
    """The window alone (no server): early answers wait for older frames; held ones count against its size."""
    stats = Stats()
    window = Window(3, stats)
    for index in range(3):
        window.add(FrameResult(index, None, None))
    assert window.full() and stats.max_inflight_seen == 3
    window.finish(2, [], None, 0.1)  # overtakes 0 and 1
    window.finish(0, [], None, 0.3)
    assert window.pop().index == 0 and window.pop() is None  # 2 waits for 1
    window.add(FrameResult(3, None, None, error="bad frame: empty frame"))  # failed before it left
    assert window.full() and stats.reordered == 1
    window.finish(1, None, "request failed", 0.2)
    assert [window.pop().index for _ in range(3)] == [1, 2, 3] and window.empty()
    assert (stats.sent, stats.ok, stats.errors, stats.reordered) == (4, 2, 2, 1)
    assert list(stats.latencies_s) == [0.3, 0.1] and stats.max_inflight_seen == 3
    with pytest.raises(KeyError):
        window.finish(1, [], None, 0.1)  # not awaited any more
