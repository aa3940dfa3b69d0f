#!/usr/bin/env bash
# Build (or reuse) an arm64 Debian Bookworm sysroot with kerascls-edge in it, for running the
# device runtime under qemu user emulation on an x86_64 machine. Only package registries are used:
#   1. Debian's arm64 .debs of python3.11 and the C libraries the wheels need, resolved and
#      downloaded by a private apt (own state/cache dirs under the cache dir; the host's apt
#      sources, but APT::Architecture=arm64 and an empty dpkg status, so the host is untouched),
#      then unpacked with dpkg-deb -x (no maintainer scripts run: nothing in this set needs them);
#   2. aarch64 wheels from PyPI (pip download --platform manylinux_2_{17..36}_aarch64, i.e. up to
#      Bookworm's glibc 2.36, --only-binary=:all: --python-version 3.11) installed with
#      pip --target into the sysroot's /usr/local/lib/python3.11/dist-packages;
#   3. ./export (kerascls-edge, pure Python) built into a wheel here and installed there with
#      --no-deps; redone whenever export/ changes, so the sysroot runs the tree's current code.
#   4. a Raspberry Pi 5 /proc/cpuinfo in the sysroot (see pi5_cpuinfo: LiteRT needs an ARM one).
# Run it:   scripts/aarch64/build-sysroot.sh            (prints the sysroot path last)
# Then:     scripts/aarch64/kerascls-edge predict MODEL IMAGES -o out.json
#           scripts/aarch64/python3 -c 'import platform; print(platform.machine())'   # aarch64
# Needs:    qemu-user-static (apt-get install qemu-user-static), apt-get, dpkg-deb, flock, pip.
#           No binfmt_misc and no chroot: qemu runs with -L SYSROOT.
# Time:     cold ~25-40 s on 2 cores (~55 MB downloaded, ~300 MB on disk); cached rerun ~0.05 s.
# Cache:    $KERASCLS_AARCH64_CACHE (default ~/.cache/kerascls-aarch64). A finished stage leaves a
#           stamp holding its inputs; a rerun with the same inputs does nothing (idempotent).
# Pins:     $KERASCLS_AARCH64_PINS, by default every pin of locks/edge-cp311-linux.txt (the device
#           lock, which the x86 test environment shares): the emulated tests check what a Pi gets.
set -euo pipefail

ROOT_DIR="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="${KERASCLS_AARCH64_CACHE:-$HOME/.cache/kerascls-aarch64}"
EDGE_LOCK="$ROOT_DIR/locks/edge-cp311-linux.txt"  # the device lock: what a Pi installs
PINS="${KERASCLS_AARCH64_PINS:-$(grep -oE '^[A-Za-z0-9][A-Za-z0-9._-]*==[^ ;#]+' "$EDGE_LOCK" | tr '\n' ' ')}"
DEBS="python3.11-minimal libpython3.11-stdlib libstdc++6 libgcc-s1 ca-certificates"
EXPORT_DIR="${KERASCLS_AARCH64_EXPORT:-$ROOT_DIR/export}"  # the kerascls-edge source to install
SYSROOT="$CACHE/sysroot"
PY="${PYTHON:-$(command -v python3 || command -v python)}"  # the host's Python, for its pip
SITE="$SYSROOT/usr/local/lib/python3.11/dist-packages"
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9  # two builds at once (two test processes) wait for each other

stamp_ok() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

apt_arm64() {
  local a="$CACHE/apt"
  mkdir -p "$a/lists/partial" "$a/archives/partial" "$a/etc"
  : > "$a/status"
  apt-get -q -o APT::Architecture=arm64 -o APT::Architectures::=arm64 \
    -o Dir::State::Lists="$a/lists" -o Dir::State::status="$a/status" \
    -o Dir::Cache="$a" -o Dir::Cache::archives="$a/archives" \
    -o Dir::Etc::Preferences="$a/etc/none" -o Dir::Etc::PreferencesParts="$a/etc" \
    -o APT::Install-Recommends=false -o Debug::NoLocking=true "$@"
}

pi5_cpuinfo() {
  # qemu-user shows the guest the host's (x86) /proc/cpuinfo, unless SYSROOT/proc/cpuinfo exists
  # (-L redirects the open). LiteRT's CPU detection (cpuinfo) reads it for the ARM core type and
  # crashes (SIGSEGV in allocate_tensors/invoke) on an x86 one; this is a Raspberry Pi 5's:
  # Cortex-A76 r4p1 (MIDR 0x414fd0b1). Cores beyond the host's count are ignored by cpuinfo.
  local i f="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
  for i in 0 1 2 3; do
    printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\n' "$i" "$f"
    printf 'CPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n'
  done
  printf 'Revision\t: d04170\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n'
}

build_debs() {  # stage 1: python3.11 + libraries, arm64, from Debian
  local stamp="$CACHE/debs.stamp" want="bookworm arm64 (pi5 cpuinfo): $DEBS"
  stamp_ok "$stamp" "$want" && [ -x "$SYSROOT/usr/bin/python3.11" ] && return 0
  echo "aarch64: fetching Debian arm64 packages: $DEBS" >&2
  apt_arm64 update >&2
  apt_arm64 install --download-only -y $DEBS >&2
  rm -rf "$SYSROOT.tmp" && mkdir -p "$SYSROOT.tmp"
  for deb in "$CACHE"/apt/archives/*_arm64.deb "$CACHE"/apt/archives/*_all.deb; do
    [ -e "$deb" ] && dpkg-deb -x "$deb" "$SYSROOT.tmp"
  done
  # usrmerge as on a real Bookworm install (the loader is looked up as /lib/ld-linux-aarch64.so.1)
  for d in bin lib sbin; do
    if [ -d "$SYSROOT.tmp/$d" ] && [ ! -L "$SYSROOT.tmp/$d" ]; then
      cp -a "$SYSROOT.tmp/$d/." "$SYSROOT.tmp/usr/$d/" && rm -rf "$SYSROOT.tmp/$d"
    fi
    ln -sfn "usr/$d" "$SYSROOT.tmp/$d"
  done
  # Empty dirs shadow the host's: qemu -L falls back to a host path missing from the sysroot,
  # and the host's x86 dist-packages must never be importable by the emulated interpreter.
  mkdir -p "$SYSROOT.tmp/usr/lib/python3/dist-packages" "$SYSROOT.tmp/usr/local/lib/python3.11/dist-packages" \
           "$SYSROOT.tmp/usr/local/lib/python3/dist-packages" "$SYSROOT.tmp/etc" "$SYSROOT.tmp/proc"
  pi5_cpuinfo > "$SYSROOT.tmp/proc/cpuinfo"
  rm -rf "$SYSROOT" && mv "$SYSROOT.tmp" "$SYSROOT"
  rm -f "$CACHE/wheels.stamp" "$CACHE/export.stamp"
  echo "$want" > "$stamp"
}

build_wheels() {  # stage 2: aarch64 wheels from PyPI
  local stamp="$CACHE/wheels.stamp"
  stamp_ok "$stamp" "$PINS" && return 0
  echo "aarch64: fetching aarch64 wheels: $PINS" >&2
  local opts=(--only-binary=:all: --python-version 3.11 --implementation cp --abi cp311) g
  for g in $(seq 17 36); do opts+=(--platform "manylinux_2_${g}_aarch64"); done  # glibc <= 2.36
  opts+=(--platform manylinux2014_aarch64)
  rm -rf "$CACHE/wheels" && mkdir -p "$CACHE/wheels"
  # shellcheck disable=SC2086
  "$PY" -m pip download -q --disable-pip-version-check "${opts[@]}" -d "$CACHE/wheels" $PINS >&2
  rm -rf "$SITE" && mkdir -p "$SITE"
  # shellcheck disable=SC2086
  "$PY" -m pip install -q --disable-pip-version-check "${opts[@]}" --no-index \
    --find-links "$CACHE/wheels" --target "$SITE" $PINS >&2
  rm -f "$CACHE/export.stamp"
  echo "$PINS" > "$stamp"
}

build_export() {  # stage 3: this tree's kerascls-edge
  local stamp="$CACHE/export.stamp" want
  want="$(cd "$EXPORT_DIR" && find . -name '*.py' -o -name pyproject.toml | grep -v egg-info \
          | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)"
  stamp_ok "$stamp" "$want" && return 0
  echo "aarch64: installing ./export (kerascls-edge) into the sysroot" >&2
  rm -rf "$CACHE/export-wheel" && mkdir -p "$CACHE/export-wheel"
  local src="$CACHE/export-src"
  rm -rf "$src" && mkdir -p "$src"  # a copy: building in the tree would leave build/ there
  (cd "$EXPORT_DIR" && tar cf - --exclude='*.egg-info' --exclude=build --exclude=__pycache__ .) \
    | (cd "$src" && tar xf -)
  "$PY" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation \
    -w "$CACHE/export-wheel" "$src" >&2
  rm -rf "$SITE"/kerascls_edge "$SITE"/kerascls_edge-*.dist-info
  "$PY" -m pip install -q --disable-pip-version-check --no-deps --no-compile \
    --platform any --only-binary=:all: --python-version 3.11 \
    --target "$SITE" --upgrade "$CACHE"/export-wheel/kerascls_edge-*.whl >&2
  # The console script pip wrote points at this machine's python: write the device's own.
  mkdir -p "$SYSROOT/usr/local/bin"
  printf '#!/usr/bin/python3.11\nfrom kerascls_edge.cli import run\nrun()\n' \
    > "$SYSROOT/usr/local/bin/kerascls-edge"
  chmod +x "$SYSROOT/usr/local/bin/kerascls-edge"
  echo "$want" > "$stamp"
}

build_debs
build_wheels
build_export
echo "$SYSROOT"
