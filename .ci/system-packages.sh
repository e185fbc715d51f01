#!/bin/sh
# Installs the system packages the tests need, when missing and permitted:
# bubblewrap (the local pool's sandbox) and chromium (the browser UI tests in
# tests/ui). Prints what to do otherwise; never fails the build for a missing
# package: the sandbox tests skip without bubblewrap, and the UI tests fail
# with the reason when chromium is missing.
set -u
need=""
command -v bwrap >/dev/null 2>&1 || need="$need bubblewrap"
[ -x /usr/bin/chromium ] || need="$need chromium"
[ -z "$need" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing system packages for the sandbox and the UI tests:$need"
    # Lock timeout: other builds on a shared machine may be installing at the same time.
    apt-get -o DPkg::Lock::Timeout=300 update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
            --no-install-recommends $need >/dev/null || {
        echo "error: could not install$need with apt-get; install it by hand." >&2
        exit 1
    }
else
    echo "note: the tests need$need. Install it with your package manager" >&2
    echo "      (Debian/Ubuntu: sudo apt-get install$need). Without bubblewrap the local" >&2
    echo "      pool refuses to run unsandboxed unless started with --insecure-no-sandbox;" >&2
    echo "      without chromium (/usr/bin/chromium) the UI tests in tests/ui fail." >&2
fi
