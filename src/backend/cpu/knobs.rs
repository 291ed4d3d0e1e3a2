//! The CPU backend's tuning knobs as explicit options ([`CpuKnobs`], part of
//! [`CpuOptions`](super::CpuOptions)), read from the environment in one place
//! ([`CpuKnobs::from_env`]) instead of deep inside the kernels:
//!
//! | variable | knob | values |
//! |---|---|---|
//! | `MINDIE_CPU_KERNELS` | [`CpuKnobs::kernel_cap`] | `portable` or `avx2` (exactly) cap the detected kernel level; anything else caps nothing |
//! | `MINDIE_CPU_AMX` | [`CpuKnobs::amx`] | `0`/`false`/`no`/`off` turn the exact AMX matmuls off; on otherwise |
//! | `MINDIE_CPU_BF16_DOT` | [`CpuKnobs::bf16_dot`] | `1`/`true`/`yes`/`on` turn the bf16 dot-product matmuls on; off otherwise |
//!
//! Where each lands: the kernel level is computed once at load ([`CpuKnobs::simd_level`]) and
//! passed down with every step; `bf16_dot` is passed down too; `amx` is process-wide by nature
//! (the matmul driver keeps one switch, `linear::set_amx_exact`, which benchmarks also flip),
//! so the backend sets it from its options when it loads.

use super::kernels::cpu_features::detected_level;
use super::kernels::SimdLevel;
use crate::config::Env;

/// Tuning knobs of the CPU backend; the default is what an empty environment gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuKnobs {
    /// The highest kernel level to use (`MINDIE_CPU_KERNELS`), so the fallback kernels can be
    /// exercised on any machine; `SimdLevel::Avx512` (the default) caps nothing.
    pub kernel_cap: SimdLevel,
    /// The exact path may run bf16 matmuls on AMX tiles where the CPU has them
    /// (`MINDIE_CPU_AMX`; default on). Process-wide: applied when a backend loads.
    pub amx: bool,
    /// Run bf16 matmuls as bf16 × bf16 products over bf16-rounded activations (faster, not
    /// exact; see the backend's module doc) (`MINDIE_CPU_BF16_DOT`; default off).
    pub bf16_dot: bool,
}

impl Default for CpuKnobs {
    fn default() -> Self {
        Self {
            kernel_cap: SimdLevel::Avx512,
            amx: true,
            bf16_dot: false,
        }
    }
}

impl CpuKnobs {
    /// The knobs `env` sets (see the module doc for the variables and their values).
    pub fn from_env(env: &Env) -> Self {
        let kernel_cap = env
            .get("MINDIE_CPU_KERNELS")
            .and_then(SimdLevel::cap_from_name)
            .unwrap_or(SimdLevel::Avx512);
        let bf16_dot = env.get("MINDIE_CPU_BF16_DOT").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        Self {
            kernel_cap,
            // `Env::flag` is false exactly for `0`/`false`/`no`/`off` (trimmed, any case).
            amx: env.flag("MINDIE_CPU_AMX").unwrap_or(true),
            bf16_dot,
        }
    }

    /// The kernel level for this CPU: the best it has, lowered to [`Self::kernel_cap`].
    pub fn simd_level(&self) -> SimdLevel {
        detected_level().capped(self.kernel_cap)
    }
}

/// The kernel level under this process's environment, as a backend loaded with
/// `CpuKnobs::from_env` would run (tests honour `MINDIE_CPU_KERNELS` like the daemon does).
#[cfg(test)]
pub(crate) fn level_from_process_env() -> SimdLevel {
    CpuKnobs::from_env(&Env::from_process()).simd_level()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knobs(pairs: &[(&str, &str)]) -> CpuKnobs {
        CpuKnobs::from_env(&Env::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn empty_environment_is_the_default() {
        assert_eq!(knobs(&[]), CpuKnobs::default());
        let d = CpuKnobs::default();
        assert_eq!(
            (d.kernel_cap, d.amx, d.bf16_dot),
            (SimdLevel::Avx512, true, false)
        );
    }

    #[test]
    fn kernel_cap_takes_exact_names_only() {
        let cap = |v: &str| knobs(&[("MINDIE_CPU_KERNELS", v)]).kernel_cap;
        assert_eq!(cap("portable"), SimdLevel::Portable);
        assert_eq!(cap("avx2"), SimdLevel::Avx2);
        for other in ["", "avx512", "AVX2", " portable", "x"] {
            assert_eq!(cap(other), SimdLevel::Avx512, "{other:?}");
        }
    }

    #[test]
    fn cap_lowers_the_detected_level_and_never_raises_it() {
        use SimdLevel::*;
        for l in [Avx512, Avx2, Portable] {
            assert_eq!(l.capped(Avx512), l);
            assert_eq!(l.capped(Portable), Portable);
        }
        assert_eq!(Avx512.capped(Avx2), Avx2);
        assert_eq!(Avx2.capped(Avx2), Avx2);
        assert_eq!(Portable.capped(Avx2), Portable);
        let portable = knobs(&[("MINDIE_CPU_KERNELS", "portable")]);
        assert_eq!(portable.simd_level(), Portable);
        assert_eq!(CpuKnobs::default().simd_level(), detected_level());
    }

    #[test]
    fn amx_is_on_unless_turned_off() {
        let amx = |v: &str| knobs(&[("MINDIE_CPU_AMX", v)]).amx;
        for off in ["0", "false", "no", "off", " OFF ", "False"] {
            assert!(!amx(off), "{off:?}");
        }
        for on in ["", "1", "yes", "on", "2", "nope"] {
            assert!(amx(on), "{on:?}");
        }
    }

    #[test]
    fn bf16_dot_is_off_unless_turned_on() {
        let dot = |v: &str| knobs(&[("MINDIE_CPU_BF16_DOT", v)]).bf16_dot;
        for on in ["1", "true", "yes", "on", " ON ", "True"] {
            assert!(dot(on), "{on:?}");
        }
        for off in ["", "0", "off", "2", "enabled"] {
            assert!(!dot(off), "{off:?}");
        }
    }
}
