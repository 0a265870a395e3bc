"""Online transcription on Ray Serve: the same engine adapters as the batch jobs behind an
OpenAI-compatible HTTP API, a streaming WebSocket endpoint and a demo page.

- ``config``: the application's typed configuration (the ``args`` of a ``serve run`` config).
- ``engines``: the Serve deployments that hold the engines (``actors/asr_engine.py``,
  ``actors/align_engine.py``); vllm and torch are imported inside them only.
- ``api``: the ingress deployment (FastAPI): ``/v1/audio/transcriptions``,
  ``/v1/chat/completions``, ``/v1/audio/stream``, ``/health``, ``/ready``, the page.
- ``requests``: what one transcription request does, engine calls injected: decode, chunk,
  merge, align, and the answer in each response format.
- ``streaming``: a streaming session (re-decode of the recent window with the confirmed text as
  the answer prefix) and end-of-speech detection.
- ``guard``: API keys, per-key concurrency, upload size limit.
- ``metrics``: Prometheus metrics through Ray's metrics export.
- ``page.html``: the demo page.

Imports ``actors`` (engines, join/merge helpers) and pure helpers from ``pipeline`` (audio decode
and chunking, languages, alignment maths, subtitle and output formats, redaction). Only
``jobs/serve.py`` and ``jobs/serve_load.py`` import this package.
"""
