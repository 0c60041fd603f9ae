//! Mounting the kernel's pseudo file systems the receivers need (tracefs,
//! bpffs) where a host has not: as `mount -t TYPE TYPE TARGET` would, which
//! needs CAP_SYS_ADMIN.

use std::ffi::CStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `statfs(2)`'s `f_type` of the BPF file system (`BPF_FS_MAGIC`,
/// include/uapi/linux/magic.h).
pub(crate) const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// `statfs(2)`'s `f_type` of nsfs, where namespace files live
/// (`NSFS_MAGIC`, include/uapi/linux/magic.h).
pub(crate) const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Whether `path` is on a file system of type `magic` (a constant above):
/// false when it cannot be stat'ed.
pub(crate) fn is_on(path: &Path, magic: i64) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `st` is plain data the call fills in.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` outlives the call.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == magic }
}

/// Mounts a new instance of the pseudo file system `fstype` at `target`.
pub(crate) fn mount_fs(fstype: &CStr, target: &CStr) -> std::io::Result<()> {
    // SAFETY: NUL-terminated strings that outlive the call; mount(2) has no
    // other preconditions and reports failure through its return value.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        tracing::info!(
            "mounted {} at {}",
            fstype.to_string_lossy(),
            target.to_string_lossy()
        );
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
