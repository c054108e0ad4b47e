#!/usr/bin/env bash
# Checks deploy/prometheus/alerts.yaml with promtool from Debian's prometheus package: the rules
# parse (`check rules`) and each alert fires on the sample series of alerts.test.yaml (`test rules`);
# then scripts/check-dashboard.py checks the metric and label names of the rules and of
# deploy/grafana/mtls-gateway.json against src/metrics.rs.
# promtool is taken out of the package with dpkg -x, without installing the Prometheus service.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
tools=$here/target/promtool
if ! command -v promtool >/dev/null 2>&1; then
  if [[ ! -x $tools/usr/bin/promtool ]]; then
    mkdir -p "$tools"
    (cd "$tools" && apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus; })
    dpkg -x "$tools"/prometheus_*.deb "$tools"
  fi
  PATH=$tools/usr/bin:$PATH
fi
cd "$here/deploy/prometheus"
promtool check rules alerts.yaml
promtool test rules alerts.test.yaml
# The dashboard and the rules only use metrics and labels src/metrics.rs registers.
python3 "$here/scripts/check-dashboard.py"
echo "check-alerts: 1 passed, 0 failed"
