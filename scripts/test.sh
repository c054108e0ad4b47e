#!/usr/bin/env bash
# Every test: unit and whole-process tests (cargo test, including the oidc-provider interop suite), then the README's first command end to end
# (scripts/run-local.sh with the debug build, run once).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
scripts/install-deps.sh --test
# The interop tests run node oidc-provider: install the pinned package first, failing loudly
# (and failing CI) when the npm registry cannot be reached.
(cd tests/interop/oidc-provider && npm ci --no-audit --no-fund)
# The whole-process tests run the dev stack's binaries, which the test build alone does not make.
cargo build --workspace --bins 2>&1
cargo test --workspace --all-targets 2>&1
# The certificate-binding, DPoP, per-partner and revocation cases again, with the partners behind
# Debian's nginx as the TLS-terminating balancer that forwards their certificates to the
# trusted-hop listener.
MTLS_TEST_VIA=balancer cargo test --test flow --test dpop --test interop --test optional_hosts --test limits \
  --test partners --test revocation 2>&1
# Replicas, each behind a balancer of its own: the cases that go through a partner's requests (the
# shared-state outage cases are about the server, not the way in).
MTLS_TEST_VIA=balancer cargo test --test cluster -- a_dpop_proof_used_on_one_replica a_partner_limit_holds \
  a_purge_on_one_replica a_proof_dated_ahead 2>&1
PROFILE=debug RUN_ONCE=1 scripts/run-local.sh
echo "run-local: 1 passed, 0 failed"
