#!/bin/sh
# Installs the Debian packages the build host needs (idempotent).
# Adds the contrib component and bookworm-backports, which carry ZFS, the 6.12 kernel and qemu 10.
set -eu

SOURCES=/etc/apt/sources.list.d/eve-storage.sources
HOST_PKGS="qemu-system-x86 qemu-utils ovmf swtpm swtpm-tools grub-efi-amd64-bin grub-common grub2-common
 squashfs-tools mtools dosfstools gdisk xz-utils zstd cpio kmod e2fsprogs
 build-essential autoconf automake libtool bc flex bison libelf-dev dwarves
 pkg-config libssl-dev iproute2 socat libtss2-dev libblkid-dev libclang-dev libdevmapper-dev
 osslsigncode gnupg cryptsetup-bin python3-virt-firmware efitools curl openssl"

# The Rust toolchain is the builder's own (rustup), not Debian's 1.63: check it is new enough.
need=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$(dirname "$0")/../Cargo.toml")
have=$(rustc --version 2>/dev/null | awk '{print $2}')
if [ -z "$have" ]; then
    echo "host-deps: no rustc on PATH: install Rust $need or newer with rustup (https://rustup.rs), then run make again" >&2
    exit 1
fi
if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1)" != "$need" ]; then
    echo "host-deps: rustc $have is older than the workspace's rust-version $need: run \`rustup update stable\`" >&2
    exit 1
fi

missing=""
for p in $HOST_PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
have_sources=0
[ -f "$SOURCES" ] && have_sources=1

# The builder resolves packages from apt's lists; Debian drops superseded kernels from the mirror,
# so lists older than a day may name files that no longer download.
fresh_lists=0
if [ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*bookworm-backports_main_binary-amd64_Packages*' -mmin -1440 2>/dev/null)" ]; then
    fresh_lists=1
fi

if [ -z "$missing" ] && [ "$have_sources" = 1 ] && [ "$fresh_lists" = 1 ]; then
    echo "host-deps: all host packages present, package lists fresh" >&2
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    if [ -z "$missing" ]; then
        echo "host-deps: apt lists are stale and only root can refresh them; continuing" >&2
        exit 0
    fi
    echo "host-deps: missing packages:$missing" >&2
    echo "host-deps: run as root (or install them) to continue" >&2
    exit 1
fi
if [ "$have_sources" = 0 ]; then
    echo "host-deps: adding $SOURCES (contrib, bookworm-backports)" >&2
    cat > "$SOURCES" <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
echo "host-deps: apt-get update" >&2
apt-get update -q >&2
[ -z "$missing" ] && exit 0
echo "host-deps: installing:$missing" >&2
# qemu (and qemu-img, which qemu-system-x86 only recommends) come from backports, one version
# for both; virt-fw-vars (which enrolls the Secure Boot keys into OVMF's variables) is only there.
BACKPORTS="qemu-system-x86 qemu-utils python3-virt-firmware"
stable=""
from_bp=""
for p in $missing; do
    case " $BACKPORTS " in *" $p "*) from_bp="$from_bp $p" ;; *) stable="$stable $p" ;; esac
done
[ -z "$stable" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $stable >&2
[ -z "$from_bp" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -t bookworm-backports $from_bp >&2
