"""Forced alignment maths, no engine: ``units`` (text to aligner units per language), ``plan``
(long recordings cut into aligner pieces), ``timestamps`` (slot classes to word times, repaired:
monotone slots, piled-up words spread over their gap), ``sentences`` (timed words to sentence
segments), ``subtitles`` (words to SRT/VTT cues) and ``subtitle_stage`` (writes one subtitle file
per row).

Imports ``languages``, ``io`` and ``audio.chunking``. ``actors/align_actor.py`` uses ``units``,
``plan``, ``timestamps`` and ``sentences``; ``subtitle_stage`` is for job runs only.
"""
