#!/usr/bin/env bash
# `make lint`'s check of deploy/prometheus: the rules (promtool check rules), their unit tests
# (promtool test rules) and the example Prometheus config (promtool check config, in a scratch
# copy holding a placeholder key file, since the real one is a git-ignored secret).
# promtool comes from Debian's `prometheus` package (.ci/run installs it). Without it the check
# is skipped with a message, except in CI (CI=true), where that is a failure.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v promtool >/dev/null 2>&1; then
    if [ "${CI:-}" = true ]; then
        echo "deploy/prometheus: promtool not found (apt-get install prometheus)" >&2
        exit 1
    fi
    echo "deploy/prometheus: SKIPPED, promtool not found (apt-get install prometheus to check the alert rules)" >&2
    exit 0
fi
promtool check rules alerts.yml
promtool test rules alerts_test.yml
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp prometheus.yml alerts.yml "$scratch"/
mkdir "$scratch/secrets"
echo placeholder-key > "$scratch/secrets/dakera_root_api_key"
promtool check config "$scratch/prometheus.yml"
