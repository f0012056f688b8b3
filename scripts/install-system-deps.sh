#!/usr/bin/env bash
# Installs the system tools `morsel hwcheck` needs: QEMU (an x86-64 MMU that
# nobody in this project wrote) and nasm (to assemble the guest).
# Idempotent: does nothing when both are already on PATH, so CI can call it
# on every run. Non-interactive; needs root (or sudo) for apt-get.
set -euo pipefail

if command -v qemu-system-x86_64 >/dev/null 2>&1 && command -v nasm >/dev/null 2>&1; then
  echo "install-system-deps: qemu-system-x86_64 and nasm already present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# qemu-system-x86 has the x86-64 system emulator; --no-install-recommends keeps
# out the GUI/audio stack (the guest runs with -display none).
$SUDO apt-get install -y -q --no-install-recommends qemu-system-x86 nasm
qemu-system-x86_64 --version | head -n 1
nasm -v
