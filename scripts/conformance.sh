#!/usr/bin/env bash
# OpenStack's Tempest against a fresh strato server (make conformance; not part of CI).
#   scripts/conformance.sh [--regex R] [--concurrency N] [--workdir D] [--list]
# Installs what `make test` needs, Tempest into its own venv ($TEMPEST_VENV or the
# workdir's), runs it, and writes conformance/results/{latest,tests}.json.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
exec .venv/bin/python -m conformance.run "$@"
