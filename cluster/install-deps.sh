#!/usr/bin/env bash
# Installs everything LatentForge needs on Debian 12 / Ubuntu (as root, or with sudo).
# Safe to run twice: apt skips what is already there. Set LF_SKIP_APT=1 to skip entirely.
set -euo pipefail
[ "${LF_SKIP_APT:-0}" = 1 ] && { echo "install-deps: LF_SKIP_APT=1, skipping"; exit 0; }

SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root or install sudo" >&2; exit 1; }
  SUDO=sudo
fi

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config git ca-certificates
  # the fixed stack
  libtorch-dev libopenmpi-dev openmpi-bin libhdf5-dev libboost-program-options-dev
  libgoogle-glog-dev libgtest-dev libgmock-dev
  # fast BLAS for torch's CPU path (Debian's default reference BLAS is ~30x slower)
  libopenblas0-pthread
  # small well-kept libraries: JSON, image files, gzip, SHA-256
  nlohmann-json3-dev libstb-dev zlib1g-dev libssl-dev
  # the embedded dataset
  dataset-fashion-mnist
  # Python for reference scripts, benchmarks and plots (/usr/bin/python3, Debian's packages)
  python3 python3-numpy python3-torch python3-h5py python3-matplotlib python3-scipy python3-pil
  # a real local Slurm for the cluster tests (libpmix-dev comes with libopenmpi-dev)
  slurmctld slurmd slurm-client munge libpmix-dev
  # the multi-node test cluster: network namespaces, veths, a bridge (ip; nsenter and unshare
  # are in util-linux, which every Debian has)
  iproute2 util-linux
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${#missing[@]} packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all ${#PACKAGES[@]} packages present"
fi

# Make OpenBLAS (pthread flavour) the BLAS torch loads, whatever was chosen before.
for alt in libblas.so.3-x86_64-linux-gnu liblapack.so.3-x86_64-linux-gnu; do
  lib=/usr/lib/x86_64-linux-gnu/openblas-pthread/${alt%%-x86_64-linux-gnu}
  if [ -e "$lib" ] && update-alternatives --query "$alt" >/dev/null 2>&1; then
    $SUDO update-alternatives --set "$alt" "$lib" >/dev/null
  fi
done
echo "install-deps: done"
