//! A shared or private memory mapping, read and written only through
//! atomics: the interest hint table's memory (see [`super::hints`]).

use std::{
    num::NonZeroUsize,
    os::fd::AsFd,
    ptr::NonNull,
    sync::atomic::{AtomicU32, AtomicU64},
};

use nix::sys::mman::{mmap, mmap_anonymous, munmap, MapFlags, ProtFlags};

use super::hints::HintError;

/// A memory mapping of `len` bytes, unmapped on drop.
pub(super) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is only accessed through atomics.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    pub(super) fn shared(fd: impl AsFd, len: usize) -> Result<Mapping, HintError> {
        let size = NonZeroUsize::new(len).ok_or(HintError::Short { len })?;
        // SAFETY: a fresh mapping of our own descriptor; nothing else aliases it
        // in this process but through atomics.
        let ptr = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )?
        };
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Zeroed private memory, committed page by page as it is touched.
    pub(super) fn private(len: usize) -> Result<Mapping, HintError> {
        let size = NonZeroUsize::new(len).ok_or(HintError::Short { len })?;
        // SAFETY: a fresh anonymous mapping.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE,
            )?
        };
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    pub(super) fn u32s(&self, offset: usize, count: usize) -> &[AtomicU32] {
        assert!(offset % 4 == 0 && offset + count * 4 <= self.len);
        // SAFETY: in bounds (checked) of a page-aligned mapping that lives as
        // long as `self`, aligned for u32; AtomicU32 has the layout of u32.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(offset).cast(), count) }
    }

    pub(super) fn u64s(&self, offset: usize, count: usize) -> &[AtomicU64] {
        assert!(offset % 8 == 0 && offset + count * 8 <= self.len);
        // SAFETY: as in `u32s`, aligned for u64.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(offset).cast(), count) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping; no reference to it outlives `self`.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}
