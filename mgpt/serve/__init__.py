"""``mgpt serve``: a trained model behind HTTP (OpenAI-compatible completions for decoders; classify, tag
and score endpoints for task heads), with request batching over buckets compiled at start-up.

:mod:`mgpt.serve.app` builds the FastAPI app from an already-loaded predictor (so tests build it
in-process); :mod:`mgpt.serve.server` is the one place that opens a socket.
"""
