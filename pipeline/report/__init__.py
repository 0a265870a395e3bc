"""What people read about a run: ``page`` (report.html), ``plots`` (its inline SVG plots) and
``progress`` (progress lines in the driver's log while the job runs).

Imports ``io``, ``languages`` and ``redact``; used by the job runs only.
"""
