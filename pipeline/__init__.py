"""The pipeline: Ray Data stages and the plumbing between them. No model code, no entry points.

Floors, each using only the ones below it (``jobs/`` sits above all of them):

- job runs, here at the top: ``transcribe`` (the transcribe/align run: builds the Ray Data
  graph, writes, accounts), ``evaluate`` (the evaluation run), ``recovery`` (the lost-row retry
  pass), and the runs of ``label/`` and ``etl/``;
- stages, one package per concern: ``audio/`` (decode, chunking, the decode stage), ``align/``
  (word units, planning, timestamps, subtitles), ``score/`` (WER/CER, the score stage, job
  metrics), ``output/`` (result files in other tools' formats: jsonl, txt, json, tsv),
  ``report/`` (report.html, progress lines), ``label/`` and ``etl/`` (their stages and
  records), ``benchmark/`` (the benchmark and load-test jobs' parts);
- the ground floor: ``io/`` (manifests, storage, schema, commit), ``config`` (typed job config,
  validated once), ``languages`` (the language table), ``redact`` (secrets out of what is written),
  ``watchdog`` (no process outlives its job: a watcher ends a dead process's descendants).

Stages know no entry point and no job run. ``actors/`` may import pure helpers from here (the
schema, languages, alignment maths, chunking), never Ray Data glue or a job run.
"""
