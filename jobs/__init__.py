"""The jobs: `python -m jobs.<name> --config FILE`, on a laptop or under `ray job submit`."""

import os

# Ray Data's executor runs in the driver, this process, and reads this once, when ray.data is
# first imported. By default it fetches each output block's metadata on a background thread that
# polls every 0.1 s, and a finished task's successor is only started after that fetch: with
# decode tasks of about a second, each worker then idled 0.13-0.2 s between tasks (2 cores;
# 0.015-0.1 s fetching inline), and the decode stage ran at 0.79-0.81 of two plain loops instead
# of 0.82-0.89. The metadata is a few hundred bytes on the node that made it. A value set in the
# environment wins.
os.environ.setdefault("RAY_DATA_METADATA_PREFETCH_ON_THREAD", "0")
