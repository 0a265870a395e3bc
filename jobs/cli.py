"""The command line shared by the jobs: `--config FILE`, `--set a.b=c`, the console, exit codes.

Every job goes through :func:`run_job`: the config is validated and the models it names are
checked before Ray or any actor starts, so a typo or an unreachable model costs a second, not a
cluster's start-up. Exit codes: 0 done, 1 the run failed, 2 the config, a model or the manifest
is invalid (nothing was processed).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from jobs import logs
from pipeline.config import ConfigError, load_config


def parse_args(prog: str, description: str, example_config: str, argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", required=True, help=f"YAML job config ({example_config})")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one config field, e.g. --set output.path=s3://bucket/out (repeatable)",
    )
    return parser.parse_args(argv)


def fail(message: str) -> int:
    """One error line on stderr; the exit code for an invalid config, model or manifest."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    return 2


def models_of(cfg: Any) -> list[tuple[str, str, dict]]:
    """(config field, model, storage options) for every model the job will load.

    A section counts when the job runs it: `asr` always (but in a benchmark run with
    `engine: false`, which decodes only), `align` when enabled (the align job's always is), the
    label job's `agreement` model when enabled.
    """
    found = []
    if getattr(cfg, "engine", True) is False:
        return found
    for section in ("asr", "align", "agreement"):
        part = getattr(cfg, section, None)
        if part is None or not getattr(part, "model", None) or not getattr(part, "enabled", True):
            continue
        # The actors copy an s3:// model with the input's options (the ETL job: the source's).
        options = getattr(getattr(cfg, "input", None), "storage_options", None)
        if options is None:
            options = getattr(cfg, "storage_options", None)
        if not isinstance(options, dict):
            options = {}
        found.append((f"{section}.model", part.model, dict(options)))
    return found


def check_models(cfg: Any) -> str | None:
    """The first model of the job that cannot be loaded, as one line naming it and what to try."""
    from actors.model_source import model_problem

    for field, model, options in models_of(cfg):
        problem = model_problem(model, options)
        if problem:
            return (
                f"{field} '{model}' cannot be loaded: {problem}. Try --set {field}=<a local checkpoint "
                f"directory or an s3:// prefix>, or --set {field}=models/tiny-qwen3-asr-synth "
                "(the bundled tiny model) to check the set-up"
            )
    return None


def run_job(
    *,
    prog: str,
    doc: str,
    example_config: str,
    schema: type[BaseModel],
    body: Callable[[Any], int],
    argv: list[str] | None = None,
) -> int:
    """Parse the command line, validate the config, set up the console by its `log_level`, check
    the models, then return ``body(cfg)``: the job's exit code."""
    args = parse_args(prog, doc.splitlines()[0], example_config, argv)
    try:
        cfg = load_config(args.config, args.overrides, schema=schema)
    except ConfigError as e:
        return fail(str(e))
    logs.configure(getattr(cfg, "log_level", "info"))
    problem = check_models(cfg)
    if problem:
        return fail(problem)
    return body(cfg)


def transcribe_body(runner: Callable[[Any], Any] | None = None) -> Callable[[Any], int]:
    """The body of the transcribe, align and label jobs: start (or join) Ray, run, say where the
    rows went. ``runner(cfg)`` returns a RunResult; unset = the transcribe/align run."""

    def body(cfg: Any) -> int:
        from jobs.ray_session import start_ray
        from pipeline.transcribe import run

        start_ray(cfg.ray)
        result = (runner or run)(cfg)
        print(f"wrote {result.rows_written} results and {result.rows_failed} failed rows to {cfg.output.path}")
        return 0

    return body


def main(
    *,
    prog: str,
    description: str,
    example_config: str,
    schema: type[BaseModel],
    argv: list[str] | None = None,
    runner: Callable[[Any], Any] | None = None,
) -> int:
    """A transcribe-like job: ``runner(cfg)`` runs it and returns a RunResult; unset = the
    transcribe/align run."""
    return run_job(
        prog=prog, doc=description, example_config=example_config, schema=schema,
        body=transcribe_body(runner), argv=argv,
    )  # fmt: skip
