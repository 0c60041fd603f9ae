//! Mounting the kernel's pseudo file systems the receivers need (tracefs,
//! bpffs) where a host has not: as `mount -t TYPE TYPE TARGET` would, which
//! needs CAP_SYS_ADMIN.

use std::ffi::CStr;

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
