#!/usr/bin/env bash
# Build preemptor's two guest kernels from Debian's linux-source-6.1:
#   fixed    - the source as shipped, plus the host-compat patch;
#   reverted - the same tree plus patches/revert-do-exit-fix.patch,
#              built incrementally right after `fixed`.
# Output (cached, keyed by a hash of package version, fragment, patches and
# this script): $PREEMPTOR_CACHE/kernels/<key>/{fixed,reverted}/
#   {vmlinux,bzImage,System.map,config}
#
# Usage: build.sh            build if needed, then print "<variant> <dir>"
#        build.sh --paths    print the paths if built, else exit 3 (no work)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${PREEMPTOR_CACHE:-$HOME/.cache/preemptor}
pkg=linux-source-6.1
deps=(linux-source-6.1 gcc make bc flex bison libelf-dev libssl-dev xz-utils patch python3)

log() { echo "guest/kernel/build.sh: $*" >&2; }

pkg_version() { dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null || true; }

key_of() {
    {
        echo "$pkg $(pkg_version)"
        cat "$here/config.fragment" "$here/build.sh"
        for p in "$here"/patches/*.patch; do echo "== $(basename "$p")"; cat "$p"; done
    } | sha256sum | cut -c1-16
}

print_paths() {
    echo "fixed $1/fixed"
    echo "reverted $1/reverted"
}

if [[ "${1:-}" == "--paths" ]]; then
    [[ -n "$(pkg_version)" ]] || { log "$pkg is not installed; run guest/kernel/build.sh"; exit 3; }
    out=$cache/kernels/$(key_of)
    [[ -f $out/fixed/vmlinux && -f $out/reverted/vmlinux ]] || {
        log "kernels not built for these inputs ($out); run guest/kernel/build.sh"; exit 3; }
    print_paths "$out"
    exit 0
fi

missing=()
for d in "${deps[@]}"; do dpkg-query -W -f='${Status}' "$d" 2>/dev/null | grep -q "ok installed" || missing+=("$d"); done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    sudo_=""; [[ $(id -u) == 0 ]] || sudo_=sudo
    $sudo_ apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "${missing[@]}" >&2
fi

# One build at a time per cache (CI, tests and a user may race here).
mkdir -p "$cache"
exec 9>"$cache/.build.lock"
flock 9

key=$(key_of)
out=$cache/kernels/$key
if [[ -f $out/fixed/vmlinux && -f $out/reverted/vmlinux ]]; then
    print_paths "$out"
    exit 0
fi

log "building kernels $key ($pkg $(pkg_version)) under $cache"
mkdir -p "$cache/build"
# Only the newest build tree is kept: it is several GB with DWARF.
find "$cache/build" -mindepth 1 -maxdepth 1 ! -name "$key" -exec rm -rf {} +
work=$cache/build/$key
rm -rf "$work"; mkdir -p "$work"
tar -xf /usr/src/$pkg.tar.xz -C "$work"
src=$work/$pkg
cd "$src"
patch -p1 -s < "$here/patches/host-compat-kvm-pvm.patch"

mk() { make -s ARCH=x86_64 -j"$(nproc)" "$@"; }
mk tinyconfig >/dev/null
scripts/kconfig/merge_config.sh -m -O . .config "$here/config.fragment" >/dev/null
mk olddefconfig >/dev/null
# Every setting of the fragment must have survived olddefconfig.
bad=0
while IFS= read -r line; do
    if [[ $line =~ ^(CONFIG_[A-Z0-9_]+)=(.*)$ ]]; then
        grep -qx "$line" .config || { log "fragment: $line did not stick ($(grep "^${BASH_REMATCH[1]}=" .config || echo unset))"; bad=1; }
    elif [[ $line =~ ^#\ (CONFIG_[A-Z0-9_]+)\ is\ not\ set$ ]]; then
        grep -q "^${BASH_REMATCH[1]}=" .config && { log "fragment: ${BASH_REMATCH[1]} should be unset"; bad=1; }
    fi
done < "$here/config.fragment"
((bad == 0)) || exit 1

install_variant() {
    local dst=$out.tmp/$1
    mkdir -p "$dst"
    cp vmlinux "$dst/vmlinux"
    cp arch/x86/boot/bzImage "$dst/bzImage"
    cp System.map "$dst/System.map"
    cp .config "$dst/config"
}

rm -rf "$out.tmp"
log "fixed: full build"
time mk vmlinux bzImage >&2
install_variant fixed
log "reverted: incremental build"
patch -p1 -s < "$here/patches/revert-do-exit-fix.patch"
time mk vmlinux bzImage >&2
install_variant reverted
cmp -s "$out.tmp/fixed/config" "$out.tmp/reverted/config" || { log "configs of the variants differ"; exit 1; }
rm -rf "$out"; mv "$out.tmp" "$out"
print_paths "$out"
