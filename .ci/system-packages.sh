#!/bin/sh
# Installs the system packages the local pool's sandbox needs, when missing and
# permitted. Prints what to do otherwise; never fails the build for a package
# the sandbox can live without.
set -u
need=""
command -v bwrap >/dev/null 2>&1 || need="$need bubblewrap"
# mkfs.ext4 makes each session's /mnt/data disk (as root; without it /mnt/data is memory).
{ command -v mkfs.ext4 || [ -x /usr/sbin/mkfs.ext4 ] || [ -x /sbin/mkfs.ext4 ]; } >/dev/null 2>&1 || need="$need e2fsprogs"
[ -z "$need" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing system packages for the sandbox:$need"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null || {
        echo "error: could not install$need with apt-get; install it by hand." >&2
        exit 1
    }
else
    echo "note: the sandbox needs$need. Install it with your package manager" >&2
    echo "      (Debian/Ubuntu: sudo apt-get install$need). The local pool refuses" >&2
    echo "      to run unsandboxed unless started with --insecure-no-sandbox." >&2
fi
