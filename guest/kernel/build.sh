#!/usr/bin/env bash
# Build a preemptor guest kernel: a base, optionally plus patches and config
# fragments (a scenario's kernel variant).
#
#   base     a kernel source (debian:6.1 = Debian's linux-source-6.1,
#            debian:6.12 = linux-source-6.12, dir:PATH = a copy of the tree
#            at PATH, git:REPO@REV = commit REV of the git repository
#            REPO) + config.fragment over tinyconfig (+
#            linux-<V.P>/config.fragment where a version needs more) +
#            linux-<V.P>/host-compat-kvm-pvm.patch; a full build.
#   variant  the base's build tree + the variant's patches and fragments,
#            built incrementally; the tree is put back to the base after.
#
# Every output is cached by a hash of exactly its inputs:
#   $PREEMPTOR_CACHE/kernels/<key>/{vmlinux,bzImage,System.map,config,inputs}
# where a variant's key hashes the base key and the contents (not the
# names) of its patches and fragments, in order: a second scenario with the
# same variant reuses it, and a variant with neither is the base itself.
# A base key hashes the source, the fragments, the host-compat patch and
# the steps that configure and build (the `configure` and `mk` functions,
# not this whole file: a change to messages or tree handling rebuilds
# nothing). One build tree per base is kept (the newest base key): it is
# what makes a variant an incremental build.
#
# A git base keeps one work tree per repository (a `git clone --shared` in
# the cache: the repository is only read) and moves it from commit to
# commit with `git checkout`, so make rebuilds only what the commits
# change: this is what makes `preemptor bisect` steps incremental builds.
# Its key hashes the commit's tree, not the commit: the same tree in two
# histories is one kernel.
#
# Usage: build.sh [--paths] [--base debian:6.1|debian:6.12|dir:PATH|git:REPO@REV] [--patch FILE]... [--config FILE]...
#   prints the kernel's directory on stdout.
#   --paths   print it only if built, else exit 3 (no work, no apt).
# Exit status: 0 built; 2 bad input: one line "error: ..." on stdout (a
# patch that does not apply, a setting that does not stick, a missing file,
# a variant that does not compile); 1 anything else; 3 see --paths.
# Progress and compiler output go to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${PREEMPTOR_CACHE:-$HOME/.cache/preemptor}

log() { echo "guest/kernel/build.sh: $*" >&2; }
# Bad input: the caller (preemptor) names the scenario file around this line.
fail() { echo "error: $*"; exit 2; }

paths_only=0
base=debian:6.1
patches=()
configs=()
while (($#)); do
    case $1 in
        --paths) paths_only=1 ;;
        --base) base=${2:?--base needs a value}; shift ;;
        --patch) patches+=("$(realpath -e "${2:?--patch needs a file}" 2>/dev/null)") || fail "patch $2: no such file"; shift ;;
        --config) configs+=("$(realpath -e "${2:?--config needs a file}" 2>/dev/null)") || fail "config fragment $2: no such file"; shift ;;
        *) fail "unknown argument '$1'" ;;
    esac
    shift
done

# A base is a kernel source: a Debian source package (debian:6.1,
# debian:6.12), or a tree the user points at (dir:PATH), which is copied,
# never modified in place. What differs between kernel versions (the
# host-compat patch, extra config) lives in guest/kernel/linux-<V.P>/.
pkg=""
srcdir=""
repo=""
sha=""
moved=""
case $base in
    debian:6.1 | debian:6.12)
        pkg=linux-source-${base#debian:}
        version=${base#debian:}
        tree_name=${base/:/-}
        ;;
    dir:*)
        srcdir=$(realpath -e "${base#dir:}" 2>/dev/null) || fail "kernel base $base: no such directory"
        [[ -f $srcdir/Makefile && -d $srcdir/kernel && -d $srcdir/arch/x86 ]] ||
            fail "kernel base $base: not a Linux source tree (no Makefile, kernel/, arch/x86/)"
        version=$(awk '/^VERSION =/{v=$3} /^PATCHLEVEL =/{p=$3} END{print v"."p}' "$srcdir/Makefile")
        tree_name=dir-$(echo "$srcdir" | sha256sum | cut -c1-12)
        ;;
    git:*@*)
        spec=${base#git:}
        rev=${spec##*@}
        repo=$(realpath -e "${spec%@*}" 2>/dev/null) || fail "kernel base $base: no such directory"
        git -C "$repo" rev-parse --git-dir >/dev/null 2>&1 || fail "kernel base $base: $repo is not a git repository"
        sha=$(git -C "$repo" rev-parse -q --verify "$rev^{commit}") || fail "kernel base $base: no commit '$rev' in $repo"
        git -C "$repo" cat-file -e "$sha:kernel" 2>/dev/null && git -C "$repo" cat-file -e "$sha:arch/x86" 2>/dev/null ||
            fail "kernel base $base: commit ${sha:0:12} is not a Linux source tree (no kernel/, arch/x86/)"
        version=$(git -C "$repo" show "$sha:Makefile" | awk '/^VERSION =/{v=$3} /^PATCHLEVEL =/{p=$3} END{print v"."p}')
        tree_name=git-$(echo "$repo" | sha256sum | cut -c1-12)
        ;;
    git:*) fail "kernel base $base: expected git:REPO@REV" ;;
    *) fail "unknown kernel base '$base' (known: debian:6.1, debian:6.12, dir:PATH, git:REPO@REV)" ;;
esac
deps=(gcc make bc flex bison libelf-dev libssl-dev xz-utils patch python3 ${pkg:+"$pkg"})
basedir=$here/linux-$version
[[ -d $basedir ]] || fail "kernel base $base is Linux $version: no guest/kernel/linux-$version/ (host-compat patch) for it; known: $(cd "$here" && ls -d linux-* | sed 's/linux-//' | tr '\n' ' ')"
fragments=("$here/config.fragment")
[[ -f $basedir/config.fragment ]] && fragments+=("$basedir/config.fragment")
compat=$basedir/host-compat-kvm-pvm.patch

pkg_version() { dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null || true; }

# What identifies the base's source: the package version, or for a tree
# its git commit and local changes, else its files' sizes and times.
source_id() {
    if [[ -n $pkg ]]; then
        echo "$base $pkg $(pkg_version)"
    elif [[ -n $sha ]]; then
        echo "git tree $(git -C "$repo" rev-parse "$sha^{tree}")"
    elif git -C "$srcdir" rev-parse -q --verify HEAD 2>/dev/null; then
        echo "$base"
        git -C "$srcdir" diff HEAD
        git -C "$srcdir" ls-files --others --exclude-standard
    else
        echo "$base"
        (cd "$srcdir" && find . -path ./.git -prune -o -type f -printf '%P %s %T@\n' | sort)
    fi
}

mk() { make -s ARCH=x86_64 -j"$(nproc)" "$@"; }
# Kconfig's chatter (e.g. "override: X changes choice state" where a
# fragment picks another choice) is not progress: shown only on failure.
quiet() { local o; o=$("$@" 2>&1) || { echo "$o" >&2; return 1; }; }

# The base's configuration, in the tree: tinyconfig, then the fragments.
configure() {
    quiet mk tinyconfig
    quiet scripts/kconfig/merge_config.sh -m -O . .config "${fragments[@]}"
    quiet mk olddefconfig
}

base_key() {
    { source_id; cat "${fragments[@]}" "$compat"; declare -f mk quiet configure; } | sha256sum | cut -c1-16
}

# The source, unpacked or copied into $src.
unpack() {
    mkdir -p "$src"
    if [[ -n $pkg ]]; then
        tar -xf "/usr/src/$pkg.tar.xz" -C "$src" --strip-components=1
    elif [[ -n $sha ]]; then
        rmdir "$src"
        git clone -q --shared --no-checkout "$repo" "$src"
        git -C "$src" checkout -q -f --detach "$sha"
        echo "$sha" > "$state/rev"
    else
        tar -C "$srcdir" --exclude-vcs -cf - . | tar -C "$src" -xf -
        make -s -C "$src" mrproper   # whatever was built in the original
    fi
}

# The variant's key: the base's when it adds nothing.
variant_key() {
    ((${#patches[@]} + ${#configs[@]})) || { echo "$1"; return; }
    {
        echo "base $1"
        for p in "${patches[@]}"; do echo "== patch"; cat "$p"; done
        for c in "${configs[@]}"; do echo "== config"; cat "$c"; done
    } | sha256sum | cut -c1-16
}

built() { [[ -f $1/vmlinux && -f $1/bzImage ]]; }

if ((paths_only)); then
    [[ -z $pkg || -n "$(pkg_version)" ]] || { log "$pkg is not installed; run guest/kernel/build.sh"; exit 3; }
    out=$cache/kernels/$(variant_key "$(base_key)")
    built "$out" || { log "kernel not built for these inputs ($out)"; exit 3; }
    echo "$out"
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

# One build at a time per cache (CI, tests and users may race here).
mkdir -p "$cache/kernels"
exec 9>"$cache/.build.lock"
flock 9

bkey=$(base_key)
vkey=$(variant_key "$bkey")
bout=$cache/kernels/$bkey
vout=$cache/kernels/$vkey
if built "$vout"; then echo "$vout"; exit 0; fi

tree=$cache/trees/$tree_name
src=$tree/src
state=$tree/.preemptor        # applied/ (patches now in the tree), base.config, key; rev (git)

# Every CONFIG_ line of fragment $1 must have survived olddefconfig.
check_fragment() {
    local line
    while IFS= read -r line; do
        if [[ $line =~ ^(CONFIG_[A-Z0-9_]+)=(.*)$ ]]; then
            grep -qx "$line" .config ||
                fail "config fragment $1: $line did not stick (now: $(grep "^${BASH_REMATCH[1]}=" .config || echo unset))"
        elif [[ $line =~ ^#\ (CONFIG_[A-Z0-9_]+)\ is\ not\ set$ ]]; then
            ! grep -q "^${BASH_REMATCH[1]}=" .config ||
                fail "config fragment $1: ${BASH_REMATCH[1]} should be unset (now: $(grep "^${BASH_REMATCH[1]}=" .config))"
        fi
    done < "$1"
}

install_to() {
    rm -rf "$1.tmp"; mkdir -p "$1.tmp"
    cp vmlinux arch/x86/boot/bzImage System.map "$1.tmp/"
    cp .config "$1.tmp/config"
    { echo "base $base (Linux $version${pkg:+, $pkg $(pkg_version)}) key $bkey"
      for p in "${patches[@]}"; do echo "patch $p"; done
      for c in "${configs[@]}"; do echo "config $c"; done; } > "$1.tmp/inputs"
    rm -rf "$1"; mv "$1.tmp" "$1"
}

# Put the tree back to the base: reverse the patches a variant build left
# applied (also after a failed or killed build), restore the base config.
restore_tree() {
    local p
    if [[ -d $state/applied ]]; then
        for p in $(ls -r "$state/applied"); do
            patch -p1 -R -s -f --no-backup-if-mismatch -r - < "$state/applied/$p" >/dev/null 2>&1 || return 1
            rm "$state/applied/$p"
        done
    fi
    cp "$state/base.config" .config
}

apply_compat() {
    patch -p1 --dry-run -s -f --no-backup-if-mismatch -r - < "$compat" >/dev/null 2>&1 ||
        fail "the host-compat patch $compat does not apply to $base"
    patch -p1 -s -f --no-backup-if-mismatch -r - < "$compat"
}

# The tree configured for the base: compat patch, configuration, state.
base_ready() {
    apply_compat
    configure
    for f in "${fragments[@]}"; do check_fragment "$f"; done
    rm -rf "$state/applied"; mkdir -p "$state/applied"
    cp .config "$state/base.config"
    echo "$bkey" > "$state/key"
}

fresh_tree() {
    log "base $base: ${pkg:+unpacking $pkg $(pkg_version)}${srcdir:+copying $srcdir}${sha:+cloning $repo at ${sha:0:12}} into $tree"
    rm -rf "$tree"; mkdir -p "$state"
    unpack
    cd "$src"
    base_ready
}

# A git tree moves to the commit: `git checkout -f` rewrites only the files
# that differ (and undoes the compat and variant patches). The files the
# compat patch touches get their times back where the commits do not
# change them, so make does not rebuild them for nothing; only when the
# tree was left whole (not by a killed build).
move_tree() {
    local old f
    old=$(cat "$state/rev" 2>/dev/null) || return 1
    cd "$src" || return 1
    git cat-file -e "$sha^{commit}" 2>/dev/null || return 1
    log "base $base: moving the kept tree from ${old:0:12} to ${sha:0:12}"
    declare -A stamp=()
    if [[ $(cat "$state/key") != moving && -z "$(ls -A "$state/applied" 2>/dev/null)" ]]; then
        while IFS= read -r f; do
            [[ -f $f ]] && stamp[$f]=$(stat -c %y "$f")
        done < <(sed -n 's|^+++ [^/]*/\([^\t ]*\).*|\1|p' "$compat")
    fi
    echo moving > "$state/key"
    git checkout -q -f --detach "$sha" || return 1
    echo "$sha" > "$state/rev"
    apply_compat
    declare -A changed=()
    while IFS= read -r f; do changed[$f]=1; done < <(git diff --name-only "$old" "$sha")
    for f in "${!stamp[@]}"; do
        [[ -n ${changed[$f]:-} ]] || touch -d "${stamp[$f]}" "$f"
    done
    configure || fail "configuring $base failed (output above)"
    for f in "${fragments[@]}"; do check_fragment "$f"; done
    rm -rf "$state/applied"; mkdir -p "$state/applied"
    cp .config "$state/base.config"
    echo "$bkey" > "$state/key"
}

if [[ $(cat "$state/key" 2>/dev/null) != "$bkey" ]]; then
    if [[ -n $sha && -d $src/.git ]] && move_tree; then
        moved=1
    else
        fresh_tree
    fi
else
    cd "$src"
    restore_tree || { log "could not put the tree back to the base; unpacking again"; fresh_tree; }
fi

if ! built "$bout"; then
    if [[ -n $moved ]]; then log "base $base ($bkey): incremental build in the kept tree"; else log "base $base ($bkey): full build"; fi
    t0=$SECONDS
    mk vmlinux bzImage >&2 || { echo "error: base kernel build failed (compiler output above)"; exit 1; }
    install_to "$bout"
    log "base built in $((SECONDS - t0)) s: $bout"
fi
if built "$vout"; then echo "$vout"; exit 0; fi

# The variant: patches first (each checked with --dry-run, so a patch that
# does not apply leaves nothing behind), then fragments.
i=0
for p in "${patches[@]}"; do
    if ! msg=$(patch -p1 --dry-run -f -N --no-backup-if-mismatch -r - < "$p" 2>&1); then
        restore_tree   # the patches before this one
        file=$(grep -m1 -oP '^(checking|patching) file \K.*' <<< "$msg" || true)
        why=$(grep -m1 -E 'FAILED|can.t find file|Reversed|garbage|malformed|unexpected' <<< "$msg" || echo "${msg%%$'\n'*}")
        why=${why%.}
        fail "patch $p does not apply to $base: ${why,}${file:+ ($file)}"
    fi
    i=$((i + 1))
    cp "$p" "$state/applied/$(printf %03d $i).patch"
    patch -p1 -s -f -N --no-backup-if-mismatch -r - < "$p" >&2
done
if ((${#configs[@]})); then
    quiet scripts/kconfig/merge_config.sh -m -O . .config "${configs[@]}"
    quiet mk olddefconfig
    # A failure leaves the tree as it is: the next build puts it back first.
    for c in "${configs[@]}"; do check_fragment "$c"; done
fi

log "variant $vkey: incremental build over base $bkey (${#patches[@]} patches, ${#configs[@]} fragments)"
t0=$SECONDS
if ! mk vmlinux bzImage >&2; then
    restore_tree
    fail "the variant does not build (${#patches[@]} patches, ${#configs[@]} fragments over $base; compiler output above)"
fi
install_to "$vout"
log "variant built in $((SECONDS - t0)) s: $vout"
restore_tree
echo "$vout"
