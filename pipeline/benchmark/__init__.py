"""The benchmark job's parts: a synthetic corpus, decode baselines, engine baselines, memory."""
