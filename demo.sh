#!/usr/bin/env bash
# The main job: build what is missing, then run the seed scenario
# (scenarios/do-exit-race/) on each kernel variant it declares (fixed, and with the fix reverted),
# with and without injection, and print the verdict table.
# Extra arguments go to `preemptor demo` (e.g. --runs 20 --out runs/).
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release -p preemptor
./target/release/preemptor setup --yes --no-shell-files >/dev/null
exec ./target/release/preemptor demo scenarios/do-exit-race "$@"
