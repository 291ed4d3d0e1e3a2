//! CPU feature detection: the instruction-set level the kernels may use ([`SimdLevel`],
//! [`detected_level`], lowered by a cap from the `MINDIE_CPU_KERNELS` knob with
//! [`SimdLevel::capped`]), AVX-512 BF16 ([`has_avx512_bf16`]) and AMX with the OS permission
//! for its tile state ([`has_amx`]). The environment is not read here: the backend turns its
//! options (`CpuKnobs`) into a level once at load and passes it down.
#![allow(unsafe_code)]

/// Which instruction-set level the kernels were entered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimdLevel {
    Avx512,
    Avx2,
    Portable,
}

impl SimdLevel {
    /// The cap a `MINDIE_CPU_KERNELS` value names: `portable` or `avx2` (exactly); any other
    /// value caps nothing (`None`).
    pub fn cap_from_name(name: &str) -> Option<SimdLevel> {
        match name {
            "portable" => Some(SimdLevel::Portable),
            "avx2" => Some(SimdLevel::Avx2),
            _ => None,
        }
    }

    /// The lower of `self` and `cap`: a detected level capped so the fallback kernels can be
    /// exercised (parity tests, comparisons) on any machine. `SimdLevel::Avx512` caps nothing.
    pub fn capped(self, cap: SimdLevel) -> SimdLevel {
        fn rank(l: SimdLevel) -> u8 {
            match l {
                SimdLevel::Portable => 0,
                SimdLevel::Avx2 => 1,
                SimdLevel::Avx512 => 2,
            }
        }
        if rank(cap) < rank(self) {
            cap
        } else {
            self
        }
    }
}

/// The best level this CPU supports (detection is cached by `std`, so this costs an atomic
/// load or two).
pub fn detected_level() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("fma")
        {
            return SimdLevel::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return SimdLevel::Avx2;
        }
    }
    SimdLevel::Portable
}

/// Whether this CPU has the AVX-512 base of the GEMM kernels and the AVX-512 BF16 dot products
/// (`vdpbf16ps`) of the opt-in bf16-activation path ([`super::avx512::gemm_panel_bf16_dot`]).
pub fn has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        detected_level() == SimdLevel::Avx512 && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AMX BF16 tile kernel ([`super::amx::gemm_panel_amx`]) can run: the CPU reports
/// AMX-TILE and AMX-BF16 and the kernel grants this process the tile data state (`arch_prctl
/// ARCH_REQ_XCOMP_PERM`, once; Linux only). Cached.
pub fn has_amx() -> bool {
    static AMX: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AMX.get_or_init(|| {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            use std::arch::x86_64::__cpuid_count;
            let max_leaf = __cpuid_count(0, 0).eax;
            if max_leaf < 7 {
                return false;
            }
            let edx = __cpuid_count(7, 0).edx;
            let (tile, bf16) = (edx & (1 << 24) != 0, edx & (1 << 22) != 0);
            if !(tile && bf16) {
                return false;
            }
            const ARCH_REQ_XCOMP_PERM: nix::libc::c_long = 0x1023;
            const XFEATURE_XTILEDATA: nix::libc::c_long = 18;
            // SAFETY: `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)` only asks the kernel
            // to allow the AMX tile state for this process; it takes two integers, touches no
            // memory of ours, and fails cleanly (non-zero) where unsupported.
            let r = unsafe {
                nix::libc::syscall(
                    nix::libc::SYS_arch_prctl,
                    ARCH_REQ_XCOMP_PERM,
                    XFEATURE_XTILEDATA,
                )
            };
            r == 0
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        {
            false
        }
    })
}

/// `level`, lowered to what this CPU actually has: `SimdLevel` is a public enum, so the kernel
/// entry points (`dispatch`, `avx512`) never trust a caller's value to prove a CPU feature (detection is cached, so
/// this costs an atomic load or two).
pub(super) fn verified(level: SimdLevel) -> SimdLevel {
    match (level, detected_level()) {
        (SimdLevel::Portable, _) | (_, SimdLevel::Portable) => SimdLevel::Portable,
        (SimdLevel::Avx512, SimdLevel::Avx512) => SimdLevel::Avx512,
        _ => SimdLevel::Avx2,
    }
}
