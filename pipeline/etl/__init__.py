"""The scheduled ETL job: ``run`` (one run over a growing prefix: list, lock, transcribe, commit a
record), ``config`` (its typed config, built from the transcribe job's sections), ``record`` (the
committed run records and what they say is done) and ``lock`` (a lease lock in object storage).

``run`` is a job run and calls the transcribe run it is handed; the others import ``io`` and
``config`` only.
"""
