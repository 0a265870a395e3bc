"""Scoring: ``wer`` (normalization and WER/CER per row, one pinned normalizer), ``stage`` (the Ray
Data score stage) and ``metrics`` (job metrics from Ray Data aggregations: counts, throughput,
RTFx, corpus WER by language; the job summary).

Imports ``config``, ``languages``, ``redact`` and ``io``. Job runs use ``stage`` and ``metrics``;
``wer`` is a pure helper (labeling quality and the training tools use it too).
"""
