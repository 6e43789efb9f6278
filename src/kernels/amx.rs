//! What the AMX paths share: whether the CPU has the tile units, Linux's permission to use
//! them, and the one tile shape every AMX kernel here configures.
//!
//! Linux grants the tile registers to a process only on request
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`), asked once per process. Rust has no
//! stable AMX intrinsics, so the micro-kernels are inline assembly; no compiled Rust code uses
//! the tile registers. A micro-kernel call either configures them and releases them itself, or
//! runs inside a [`TileSession`], which configures them once for many calls on one thread.

mod lines;

pub(crate) use lines::Lines;

/// A tile unit of CPUID leaf 7 (register EDX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AmxUnit {
    /// AMX-BF16 (bit 22): `TDPBF16PS`.
    Bf16,
    /// AMX-INT8 (bit 25): `TDPBSSD` and its siblings.
    Int8,
}

/// Whether the CPU reports AMX-TILE (bit 24) and `unit`. CPUID is asked once per process: in a
/// virtual machine each CPUID traps to the hypervisor (tens of microseconds), and the kernels
/// ask on every call.
pub(crate) fn cpu_has(unit: AmxUnit) -> bool {
    static LEAF_7_EDX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let edx = *LEAF_7_EDX.get_or_init(leaf_7_edx);
    let bit = match unit {
        AmxUnit::Bf16 => 22,
        AmxUnit::Int8 => 25,
    };
    (edx >> 24) & 1 == 1 && (edx >> bit) & 1 == 1
}

/// Register EDX of CPUID leaf 7, sub-leaf 0 (0 where the CPU has no leaf 7).
fn leaf_7_edx() -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        // Leaf 7 answers only where the CPU's highest leaf is 7 or above.
        let (max, _) = std::arch::x86_64::__get_cpuid_max(0);
        if max < 7 {
            return 0;
        }
        std::arch::x86_64::__cpuid_count(7, 0).edx
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

/// Whether this process may use `unit`: the CPU has it and Linux granted the tile-data
/// permission (asked on the first call).
pub(crate) fn is_available(unit: AmxUnit) -> bool {
    static GRANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    cpu_has(unit) && *GRANTED.get_or_init(request_tile_permission)
}

/// Asks Linux for the AMX tile-data permission; `true` when granted.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tile_permission() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: arch_prctl(ARCH_REQ_XCOMP_PERM) only changes which XSAVE features this process
    // may use; it reads and writes no memory of ours. `syscall` clobbers rcx and r11.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn request_tile_permission() -> bool {
    false
}

/// Rows in one tile.
pub(crate) const TILE_ROWS: usize = 16;
/// Bytes in one tile row.
pub(crate) const TILE_ROW_BYTES: usize = 64;

/// A tile configuration for `LDTILECFG` (palette 1).
#[repr(C, align(64))]
pub(crate) struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

/// Eight tiles `tmm0 ..= tmm7` of 16 rows × 64 bytes: the only shape the AMX kernels use.
pub(crate) const FULL_TILES: TileConfig = {
    let mut bytes_per_row = [0u16; 16];
    let mut rows = [0u8; 16];
    let mut t = 0;
    while t < 8 {
        bytes_per_row[t] = TILE_ROW_BYTES as u16;
        rows[t] = TILE_ROWS as u8;
        t += 1;
    }
    TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        bytes_per_row,
        rows,
    }
};

/// The tile registers configured as [`FULL_TILES`] on this thread until the session is dropped
/// (`TILERELEASE`): micro-kernels called while it lives skip `LDTILECFG`, which costs about as
/// much as a short product (tens of nanoseconds). Between kernel calls only compiled Rust code
/// runs, which never touches the tiles, and the kernel saves them with the thread's state on a
/// context switch; a session must not span a call that could run another AMX kernel on the
/// same thread (a rayon join, say).
#[cfg(target_arch = "x86_64")]
pub(crate) struct TileSession {
    /// The configuration belongs to this thread.
    _on_this_thread: std::marker::PhantomData<*const ()>,
}

#[cfg(target_arch = "x86_64")]
impl TileSession {
    /// Configures the tiles.
    ///
    /// # Safety
    /// The process must be allowed the tile unit ([`is_available`]).
    pub(crate) unsafe fn start() -> TileSession {
        // SAFETY: the caller's contract; `LDTILECFG` reads the 64-byte configuration.
        unsafe {
            std::arch::asm!(
                "ldtilecfg [{config}]",
                config = in(reg) &FULL_TILES,
                options(nostack, readonly),
            );
        }
        TileSession {
            _on_this_thread: std::marker::PhantomData,
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Drop for TileSession {
    fn drop(&mut self) {
        // SAFETY: the tiles were configured by `start` on this thread; `TILERELEASE` returns
        // them to their initial state and touches no memory.
        unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
    }
}
