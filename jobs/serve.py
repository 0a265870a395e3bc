"""Online transcription on Ray Serve: `python -m jobs.serve --config configs/serve.yaml`.

The config is a `serve run` config: `serve run configs/serve.yaml` deploys the same application
(its import path is `jobs.serve:app_builder`, its `args` the application's settings,
actors/serve/config.py). This entry point validates the file and checks the models first, starts
(or joins, under RAY_ADDRESS) Ray, deploys, prints the address and serves until interrupted.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from actors.serve.config import ServeConfig
from jobs import cli

logger = logging.getLogger("serve")


class ServeApplication(BaseModel):
    # Serve's own per-application keys (deployments, runtime_env, ...) pass through.
    model_config = ConfigDict(extra="allow")

    name: str = "asr"
    route_prefix: str = "/"
    import_path: Literal["jobs.serve:app_builder"] = "jobs.serve:app_builder"
    args: ServeConfig = Field(default_factory=ServeConfig)


class ServeFile(BaseModel):
    """A `serve run` config holding this project's application (Serve's own keys pass through)."""

    model_config = ConfigDict(extra="allow")

    http_options: dict[str, Any] = Field(default_factory=lambda: {"host": "127.0.0.1", "port": 8000})
    applications: list[ServeApplication] = Field(min_length=1, max_length=1)
    log_level: Literal["info", "debug"] = "info"

    @property
    def app(self) -> ServeConfig:
        return self.applications[0].args

    # What jobs/cli.py's model check reads.
    @property
    def asr(self):
        return self.app.asr

    @property
    def align(self):
        return self.app.align


def app_builder(args: dict) -> Any:
    """The application `serve run` builds from a config's `args` (validated as ServeConfig)."""
    from actors.serve.api import build

    return build(ServeConfig.model_validate(args))


def start(cfg: ServeFile, *, blocking: bool = True) -> str:
    """Start (or join) Ray, deploy the application, return its base URL; serve until interrupted
    when ``blocking``."""
    from ray import serve

    from actors.serve.api import build
    from jobs.ray_session import start_ray
    from pipeline.config import RayConfig

    start_ray(RayConfig())
    http = {"host": "127.0.0.1", "port": 8000, **cfg.http_options}
    serve.start(http_options=http)
    application = cfg.applications[0]
    serve.run(build(cfg.app), name=application.name, route_prefix=application.route_prefix)
    url = f"http://{http['host']}:{http['port']}{application.route_prefix.rstrip('/')}"
    print(f"serving {cfg.app.asr.model} at {url} (page: {url}/, API: {url}/v1/audio/transcriptions)", flush=True)
    if blocking:
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            serve.shutdown()
    return url


def main(argv: list[str] | None = None) -> int:
    return cli.run_job(
        prog="python -m jobs.serve", doc=__doc__, example_config="configs/serve.yaml",
        schema=ServeFile, body=lambda cfg: (start(cfg), 0)[1], argv=argv,
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
