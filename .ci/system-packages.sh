#!/bin/sh
# Installs the system packages the tests need, when missing and permitted:
# bubblewrap (the local pool's sandbox), e2fsprogs (mkfs.ext4 makes each
# session's /mnt/data disk, as root; without it /mnt/data is memory) and
# chromium (the browser tests in tests/ui). Prints what to do otherwise. A failed install stops the build,
# except chromium's: without it the UI tests fail and say why.
set -u
need=""
command -v bwrap >/dev/null 2>&1 || need="$need bubblewrap"
{ command -v mkfs.ext4 || [ -x /usr/sbin/mkfs.ext4 ] || [ -x /sbin/mkfs.ext4 ]; } >/dev/null 2>&1 || need="$need e2fsprogs"
[ -x /usr/bin/chromium ] || need="$need chromium"
[ -z "$need" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing system packages for the sandbox and the UI tests:$need"
    # The lock timeout: other builds on a shared machine may be installing at the same time.
    apt="apt-get -o DPkg::Lock::Timeout=300 -qq"
    $apt update || echo "warning: apt-get update failed; trying the package lists at hand" >&2
    for package in $need; do
        DEBIAN_FRONTEND=noninteractive $apt install -y --no-install-recommends "$package" >/dev/null && continue
        echo "error: could not install $package with apt-get; install it by hand." >&2
        [ "$package" = chromium ] || exit 1
        echo "       The UI tests (tests/ui) will fail until /usr/bin/chromium exists." >&2
    done
else
    echo "note: the tests need$need. Install it with your package manager" >&2
    echo "      (Debian/Ubuntu: sudo apt-get install$need). Without bubblewrap the local" >&2
    echo "      pool refuses to run unsandboxed unless started with --insecure-no-sandbox;" >&2
    echo "      without chromium (/usr/bin/chromium) the UI tests in tests/ui fail." >&2
fi
