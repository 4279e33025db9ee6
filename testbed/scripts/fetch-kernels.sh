#!/bin/bash
# Resolve, download and unpack Debian's 6.1 and 6.12 kernels (image + headers + kbuild) for
# amd64 and s390x into $CACHE (default /work/main/.cache/testbed). Idempotent: a kernel that
# is already unpacked is left alone. `cargo xtask testbed` does the same in Rust; this is the
# hand-driven reference.
# usage: fetch-kernels.sh [amd64|s390x ...]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${CACHE:-$ROOT/.cache/testbed}
ARCHES=${*:-amd64 s390x}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

# The mirror /etc/apt uses (deb822 or one-line format).
mirror() {
    local m
    m=$(grep -hoE '^URIs:\s*\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -1 || true)
    [ -n "$m" ] || m=$(grep -hoE '^deb\s+(\[[^]]*\]\s+)?\S+' /etc/apt/sources.list 2>/dev/null | awk '{print $NF}' | grep -v security | head -1 || true)
    [ -n "$m" ] || { echo "no Debian mirror in /etc/apt" >&2; exit 1; }
    echo "$m"
}
secmirror() {
    local m
    m=$(grep -hoE '^URIs:\s*\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep security | head -1 || true)
    [ -n "$m" ] || { m=$(mirror); m=${m%/debian}/debian-security; }
    echo "$m"
}

apt_opts() { # arch
    local d=$CACHE/apt/$1
    echo "-o Dir::Etc::SourceList=$d/sources.list -o Dir::Etc::SourceParts=- -o Dir::State::Lists=$d/lists -o Dir::Cache=$d/cache -o APT::Architecture=$1 -o APT::Architectures=$1 -o Debug::NoLocking=1"
}

setup_apt() { # arch
    local a=$1 d=$CACHE/apt/$1 M S
    M=$(mirror); S=$(secmirror)
    mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
    {
        echo "deb [signed-by=$KEYRING] $M bookworm main"
        echo "deb [signed-by=$KEYRING] $M bookworm-updates main"
        echo "deb [signed-by=$KEYRING] $M bookworm-backports main"
        [ "$a" = amd64 ] && echo "deb [signed-by=$KEYRING] $S bookworm-security main"
    } > "$d/sources.list"
    # refresh lists at most once a day
    if [ -z "$(find "$d/lists" -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -1)" ]; then
        apt-get $(apt_opts "$a") update -qq
    fi
}

# newest version of the flavour metapackage in the wanted series
meta_version() { # arch series
    local a=$1 s=$2
    apt-cache $(apt_opts "$a") madison "linux-image-$a" | awk -F'|' '{gsub(/ /,"",$2); print $2}' |
        grep -E "^$s\." | sort -V | tail -1
}

pkg_field() { # arch pkg=ver field
    apt-cache $(apt_opts "$1") show "$2" | awk -v f="$3:" '$1==f {sub(/^[^:]*: /,""); print; exit}'
}

fetch_one() { # arch series
    local a=$1 s=$2 dest=$CACHE/kernels/$1-$2
    if [ -f "$dest/KVER" ]; then echo "cached: $a $s $(cat "$dest/KVER")"; return; fi
    local mv img kver hdr ver common kbuild
    mv=$(meta_version "$a" "$s")
    [ -n "$mv" ] || { echo "no linux-image-$a in series $s" >&2; exit 1; }
    img=$(pkg_field "$a" "linux-image-$a=$mv" Depends | tr ',' '\n' | sed 's/^ *//; s/ .*//' | grep '^linux-image-' | head -1)
    kver=${img#linux-image-}
    hdr=linux-headers-$kver
    ver=$(pkg_field "$a" "$hdr" Version)
    common=$(pkg_field "$a" "$hdr=$ver" Depends | tr ',' '\n' | sed 's/^ *//; s/ .*//' | grep -- '-common$' | head -1)
    kbuild=$(pkg_field "$a" "$hdr=$ver" Depends | tr ',' '\n' | sed 's/^ *//; s/ .*//' | grep '^linux-kbuild' | head -1)
    echo "resolved $a $s: meta $mv image $img headers $hdr=$ver common $common kbuild $kbuild"
    local dl=$CACHE/debs/$a-$s
    mkdir -p "$dl"
    (cd "$dl" && apt-get $(apt_opts "$a") download "$img" "$hdr=$ver" "$common=$ver")
    # linux-kbuild is always the build machine's (amd64) flavour
    (cd "$dl" && apt-get $(apt_opts amd64) download "$kbuild:amd64=$ver")
    rm -rf "$dest.tmp"; mkdir -p "$dest.tmp"
    for f in "$dl"/*.deb; do dpkg -x "$f" "$dest.tmp"; done
    # the arch headers' Makefile includes the common tree by an absolute path
    local mk
    mk=$(ls "$dest.tmp"/usr/src/"$hdr"/Makefile)
    sed -i "s|/usr/src/|$dest/usr/src/|g" "$mk"
    # scripts/ and tools/ of the headers are symlinks to /usr/lib/linux-kbuild-*: re-point them
    find "$dest.tmp/usr/src" -maxdepth 2 -type l | while read -r l; do
        t=$(readlink "$l")
        case "$t" in
            /*) ln -sfn "$dest${t}" "$l" ;;
        esac
    done
    echo "$kver" > "$dest.tmp/KVER"
    echo "$ver" > "$dest.tmp/VERSION"
    mv "$dest.tmp" "$dest"
    echo "unpacked: $dest ($kver)"
}

for a in amd64 $ARCHES; do
    setup_apt "$a"
done
for a in $ARCHES; do
    for s in 6.1 6.12; do fetch_one "$a" "$s"; done
done
