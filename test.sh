#!/usr/bin/env bash
# Every test, on a fresh machine: checks formatting, installs what the
# guest build needs (apt), builds the guest programs and both kernels (cached under
# ${PREEMPTOR_CACHE:-~/.cache/preemptor}), the VMM, then runs the unit,
# classifier-corpus, symbol and end-to-end tests (real KVM, real guests;
# one at a time: the host has few cores and boots are expensive).
set -euo pipefail
cd "$(dirname "$0")"
# Formatting first: cheap, and unformatted code is a failed submission.
cargo fmt --all -- --check
bash guest/build.sh
cargo build --release -p preemptor
cargo test --release --workspace -- --test-threads=1
