# `make run` runs the smoke scenario on Docker, observed by Prometheus; `make test`
# runs the whole suite.
# Both bootstrap what they need: Debian packages, the virtualenv, the images.

VENV := .venv
STAMP := $(VENV)/.bootstrapped
HARNESS := $(VENV)/bin/harness

.PHONY: run test images lint down zoo zoo-quick

$(STAMP): pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh
	touch $(STAMP)

run: $(STAMP)
	$(HARNESS) run scenarios/smoke.yaml --observe

# Every faulty strategy caught, no correct one flagged, over 5 seeds (under
# an hour); zoo-quick runs one seed (about ten minutes). Not part of `make test`.
zoo: $(STAMP)
	$(HARNESS) zoo

zoo-quick: $(STAMP)
	$(HARNESS) zoo --quick

images: $(STAMP)
	$(HARNESS) images build

test: $(STAMP) images
	$(VENV)/bin/pytest

lint: $(STAMP)
	$(VENV)/bin/ruff format --check harness tests
	$(VENV)/bin/ruff check harness tests

down: $(STAMP)
	$(HARNESS) down
