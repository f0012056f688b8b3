#!/usr/bin/env bash
# Installs the system tools `morsel hwcheck` and its tests need: QEMU (an
# x86-64 MMU that nobody in this project wrote) and nasm (to assemble the
# guest), and what the kv tests compare against: the real memcached,
# libmemcached's tools (memccapable, memccp, memccat), pymemcache, twemproxy
# (Debian's nutcracker, for the kv sharding test), and the headless browser
# the `morsel web` tests drive (Debian's chromium, at /usr/bin/chromium;
# playwright-core never downloads one), all from
# Debian/Ubuntu packages.
#
#   scripts/install-system-deps.sh             install, or fail saying why not
#   scripts/install-system-deps.sh --optional  install when possible, else say
#                                              so and succeed (`npm test` runs
#                                              this; the hwcheck tests then skip
#                                              with the reason)
#
# Idempotent and silent when both tools are present. Installs only as root
# with apt-get (it never calls sudo on its own).
set -euo pipefail

optional=0
if [ "${1:-}" = "--optional" ]; then optional=1; fi
PACKAGES="qemu-system-x86 nasm memcached libmemcached-tools python3-pymemcache nutcracker chromium"
INSTALL_CMD="apt-get install -y --no-install-recommends $PACKAGES"

have_all() {
  command -v qemu-system-x86_64 >/dev/null 2>&1 && command -v nasm >/dev/null 2>&1 &&
    command -v memcached >/dev/null 2>&1 && command -v memccapable >/dev/null 2>&1 &&
    command -v nutcracker >/dev/null 2>&1 &&
    /usr/bin/python3 -c 'import pymemcache' >/dev/null 2>&1 && [ -x /usr/bin/chromium ]
}
if have_all; then
  exit 0
fi

cannot() {
  echo "install-system-deps: qemu-system-x86_64/nasm/memcached/libmemcached-tools/pymemcache/nutcracker/chromium missing and $1; as root run: $INSTALL_CMD" >&2
  if [ "$optional" = 1 ]; then
    echo "install-system-deps: the hwcheck, kv client and web browser tests will be skipped" >&2
    exit 0
  fi
  exit 1
}
if [ "$(id -u)" -ne 0 ]; then cannot "not root"; fi
if ! command -v apt-get >/dev/null 2>&1; then cannot "no apt-get"; fi

echo "install-system-deps: installing $PACKAGES (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
# --no-install-recommends keeps out the GUI/audio stack (the guest runs with
# -display none). A failed install is a failure even with --optional: the
# machine could have had them.
apt-get update -qq >/dev/null
$INSTALL_CMD -qq >/dev/null
