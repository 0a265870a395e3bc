"""The labeling job: ``run`` (the run: transcribe with word times, then cut, score, filter and
export), ``stage`` (its CPU stages and the utterance table), ``segments`` (utterance cuts at
pauses) and ``quality`` (the quality signals and filter reasons).

``run`` is a job run (it builds on ``pipeline.transcribe``); the other modules are stages and
helpers and know no run. ``actors/agreement_actor.py`` takes its column names from ``io.schema``.
"""
