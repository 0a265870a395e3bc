"""Audio on the CPU workers: ``decode`` (any supported recording to float32 mono 16 kHz),
``chunking`` (cuts at the quietest point near each chunk boundary), ``stage`` (the Ray Data decode
stage: one output row per input row, errors as row values) and ``worker_malloc`` (the decode
workers' allocator settings).

Imports ``io`` and ``redact`` only. ``decode`` and ``chunking`` are pure helpers that ``actors/``,
the benchmark and the training tools may use; ``stage`` is Ray Data glue (job runs only).
"""
