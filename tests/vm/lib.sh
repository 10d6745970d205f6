# Host-side helpers shared by the VM harness scripts (fetch-kernel, make-initramfs, build-driver,
# run-in-vm). Sourced, not executed.
#
# Layout of the kernel cache (shared by every build directory, override with UNBD_VM_CACHE):
#   $UNBD_VM_CACHE/linux-<kver>/root/        dpkg -x of image + headers + kbuild packages
#   $UNBD_VM_CACHE/linux-<kver>/vmlinux     uncompressed kernel, booted through PVH (faster)
#   $UNBD_VM_CACHE/linux-<kver>/.complete    written last; a kernel without it is re-fetched
#   $UNBD_VM_CACHE/initramfs/<hash>.cpio.gz  initramfs images, keyed by everything that goes in

vm_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
vm_repo=$(cd "$vm_dir/../.." && pwd)
: "${UNBD_VM_CACHE:=$vm_repo/build/vm-cache}"
: "${UNBD_BUILD_DIR:=$vm_repo/build}"

vm_log() { echo "[$(basename "$0")] $*" >&2; }
vm_die() { echo "[$(basename "$0")] error: $*" >&2; exit 1; }

# Serialises cache writers: several build directories (and helpers) share one cache.
vm_lock_cache() {
	mkdir -p "$UNBD_VM_CACHE"
	exec {vm_lock_fd}>"$UNBD_VM_CACHE/.lock"
	flock "$vm_lock_fd"
}

# Highest ABI number N already fetched completely, or nothing.
vm_cached_abi() {
	local d n best=
	for d in "$UNBD_VM_CACHE"/linux-6.1.0-*-amd64/.complete; do
		[ -e "$d" ] || continue
		n=${d#"$UNBD_VM_CACHE"/linux-6.1.0-}
		n=${n%%-amd64/.complete}
		if [ -z "$best" ] || [ "$n" -gt "$best" ]; then best=$n; fi
	done
	echo "$best"
}

vm_apt_has() { apt-cache show --no-all-versions "$1" >/dev/null 2>&1; }

# Highest N for which the package index offers both the unsigned image and its headers.
vm_index_abi() {
	local n
	for n in $(apt-cache pkgnames linux-image-6.1.0- |
		sed -n 's/^linux-image-6\.1\.0-\([0-9]\+\)-amd64-unsigned$/\1/p' | sort -rn); do
		if vm_apt_has "linux-image-6.1.0-$n-amd64-unsigned" &&
			vm_apt_has "linux-headers-6.1.0-$n-amd64" &&
			vm_apt_has "linux-headers-6.1.0-$n-common"; then
			echo "$n"
			return 0
		fi
	done
	return 1
}

# Sets vm_kver, vm_kroot, vm_kdir, vm_vmlinuz, vm_boot_image, vm_modules for an already fetched kernel
# (UNBD_VM_KERNEL_ABI picks one explicitly; otherwise the newest cached one).
vm_kernel_vars() {
	local n=${UNBD_VM_KERNEL_ABI:-$(vm_cached_abi)}
	[ -n "$n" ] || return 1
	vm_kver=6.1.0-$n-amd64
	vm_kroot=$UNBD_VM_CACHE/linux-$vm_kver/root
	vm_kdir=$vm_kroot/usr/src/linux-headers-$vm_kver
	vm_vmlinuz=$vm_kroot/boot/vmlinuz-$vm_kver
	vm_modules=$vm_kroot/lib/modules/$vm_kver
	vm_boot_image=$UNBD_VM_CACHE/linux-$vm_kver/vmlinux
	[ -e "$vm_boot_image" ] || vm_boot_image=$vm_vmlinuz
	[ -e "$UNBD_VM_CACHE/linux-$vm_kver/.complete" ]
}

# Makes sure a kernel is fetched (fetch-kernel is a no-op when cached) and sets the vm_* variables.
vm_need_kernel() {
	vm_kernel_vars 2>/dev/null || "$vm_dir/fetch-kernel" >&2 || vm_die "could not fetch the VM kernel"
	vm_kernel_vars || vm_die "kernel cache $UNBD_VM_CACHE is incomplete"
}
