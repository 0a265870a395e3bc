"""Forced alignment maths, no engine: ``units`` (text to aligner units per language), ``plan``
(long recordings cut into aligner pieces), ``timestamps`` (slot classes to word times, repaired),
``subtitles`` (words to SRT/VTT cues) and ``subtitle_stage`` (writes one subtitle file per row).

Imports ``languages``, ``io`` and ``audio.chunking``. ``actors/align_actor.py`` uses ``units``,
``plan`` and ``timestamps``; ``subtitle_stage`` is for job runs only.
"""
