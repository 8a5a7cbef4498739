#!/usr/bin/env bash
# Build everything the guest needs:
#   - the static guest programs (init, workloads) into target/guest/;
#   - the base kernel (guest/kernel/build.sh, cached by input hash); each
#     scenario's variants are built from it when first needed.
# The VMM packs the initramfs from the programs at run time.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
# crt-static only for the guest target (stripped and small: the kernel
# unpacks the initramfs byte by byte under emulation); with --target,
# RUSTFLAGS do not reach host build scripts or proc macros.
RUSTFLAGS="-C target-feature=+crt-static -C strip=symbols -C opt-level=s" cargo build --quiet --release \
    -p preemptor-guest --target x86_64-unknown-linux-gnu \
    --manifest-path "$root/Cargo.toml" --target-dir "$root/target/guest"
# The workloads the VMM may name: the binary lists them itself (static, so
# it runs on the host too).
bin=$root/target/guest/x86_64-unknown-linux-gnu/release/preemptor-guest
"$bin" --list > "$(dirname "$bin")/workloads"
bash "$here/kernel/build.sh" >/dev/null
