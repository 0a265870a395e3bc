"""What a job prints on its console, by `log_level`.

``info`` (the default): the job's start line, its progress lines, warnings that matter and the
summary. The engines' own logs (vLLM's config dump, transformers' deprecation notices, the
engine processes' exit messages) stay in Ray's per-worker log files
(``<ray temp dir>/session_*/logs/worker-*.err``), Ray Data's operator tables in its
``ray-data.log`` there, all at their own detail level; the console only says where they are.

``debug``: all of that on the console too: worker output streamed to the driver, Ray Data's
progress tables, Ray's own notices, every Python warning, and the job's own DEBUG lines.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

LEVELS = ("info", "debug")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Our own loggers: the job runs, stages and actors.
OWN_LOGGERS = ("jobs", "pipeline", "actors", "benchmark", "load_test")

_level = "info"


def verbose() -> bool:
    return _level == "debug"


class _DropNotices(logging.Filter):
    """Ray's start-up notices that are not the user's concern on a laptop run."""

    _NOTICES = (
        "Token authentication is enabled for this Ray cluster",  # embedded Ray's default; see README
        "Started a local Ray instance",
        "Progress bars disabled",  # we turn them off on purpose (log_level: info)
    )

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(n in msg for n in self._NOTICES)


def configure(log_level: str = "info") -> None:
    """Set up the driver's console for ``log_level`` ("info" or "debug"); call once, first thing.

    Raises ValueError for another level.
    """
    global _level
    if log_level not in LEVELS:
        raise ValueError(f"log_level must be one of {LEVELS}, got {log_level!r}")
    _level = log_level
    logging.basicConfig(level=logging.INFO, format=FORMAT, stream=sys.stderr, force=True)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose() else logging.INFO)
    if verbose():
        return
    # Library deprecation notices say nothing about this run (Ray's ray_remote_args, torch's
    # reduce_op, transformers' rope validation); they stay visible under log_level: debug.
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    try:
        from ray.util.annotations import RayDeprecationWarning

        warnings.filterwarnings("ignore", category=RayDeprecationWarning)
    except ImportError:  # pragma: no cover - ray is a dependency
        pass
    # Ray Data's console progress (operator tables every few seconds when stdout is not a
    # terminal) and per-dataset execution lines; the same lines still go to ray-data.log.
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    _quiet_ray_consoles()


def ray_init_kwargs() -> dict:
    """Keyword arguments for ``ray.init`` by the console level: worker output streamed to the
    driver only under debug (it stays in the session's worker log files either way)."""
    if verbose():
        return {"log_to_driver": True}
    return {"log_to_driver": False}


def _quiet_ray_consoles() -> None:
    """Ray's and Ray Data's console handlers show warnings only; their files keep everything."""
    import ray  # noqa: F401  sets up the "ray" logger's console handler
    import ray.data  # noqa: F401  sets up "ray.data"'s console and ray-data.log handlers
    from ray.data import DataContext

    for name in ("ray", "ray.data"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.WARNING)
                if not any(isinstance(f, _DropNotices) for f in handler.filters):  # configure may run again
                    handler.addFilter(_DropNotices())
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False


def announce_log_dir() -> None:
    """One line saying where the engines' and Ray's logs are (after ``ray.init``)."""
    if verbose():
        return
    try:
        import ray

        session = ray._private.worker.global_worker.node.get_session_dir_path()
    except Exception:  # a client without a local node (Ray Client) has no session dir here
        return
    logging.getLogger("jobs").info(
        "engine and Ray logs: %s/logs (log_level: debug shows them here)", session
    )
