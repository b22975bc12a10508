"""Stable person ids per camera: ByteTrack as Ultralytics runs it, and each track's voted gender.

Numpy only, so the same code runs in the server's tracking step, the clients and the tests.
`camera.Camera` is what the server keeps per camera (one Triton sequence); `bytetrack.Tracker`
and `vote.GenderVote` are its two halves.
"""
