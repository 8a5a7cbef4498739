#!/usr/bin/env bash
# Every test, on a fresh machine: checks formatting and lints, builds the
# VMM (with the guest programs inside it), runs `preemptor setup` (apt
# packages, the base kernel, cached under ${PREEMPTOR_CACHE:-~/.cache/preemptor};
# completions and man pages), builds every
# scenario's kernel variants, then runs the unit, classifier-corpus, symbol
# and end-to-end tests (real KVM, real guests; one at a time: the host has
# few cores and boots are expensive).
set -euo pipefail
cd "$(dirname "$0")"
# Formatting and lints first: cheap, and either failing is a failed submission.
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets -- -D warnings
cargo build --release -p preemptor
./target/release/preemptor setup --yes
# Debian's stock VM kernel, only for `kernel check` (never booted); gdb,
# for the test that drives it against `--gdb`; Chromium (below).
sudo_=""; [[ $(id -u) == 0 ]] || sudo_=sudo
if ! compgen -G "/boot/vmlinuz-*-cloud-amd64" >/dev/null; then
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends linux-image-cloud-amd64 >/dev/null
fi
if ! command -v gdb >/dev/null; then
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends gdb >/dev/null
fi
# Chromium, headless, for the test that renders a run's index.html.
if ! command -v chromium >/dev/null; then
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
# Slurm (munge, slurmctld, slurmd, clients), for the test that runs a job
# array on a one-node cluster (docs/slurm/local-cluster.sh).
if ! command -v sbatch >/dev/null || ! [[ -x /usr/sbin/slurmd && -x /usr/sbin/slurmctld && -x /usr/sbin/munged ]]; then
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi
# Every scenario's kernels, built (or found in the cache) before the tests
# that use them; a broken patch or fragment fails here, by name.
for s in scenarios/*/scenario.toml tests/fixtures/chaos/scenario.toml; do
    ./target/release/preemptor kernel build "$(dirname "$s")"
done
cargo test --release --workspace -- --test-threads=1
