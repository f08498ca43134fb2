"""Media at the edge: camera sources (files, RTSP, V4L2, image globs) and the H.264 encoder.

The encoder accepts only a `RedactedFrame`; sources hand raw frames to the pipeline and nowhere else.
"""
