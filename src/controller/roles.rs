//! Role decisions (SPEC-PD §3.4 step 3). Instances get `prefill` or `decode` in id order; an
//! instance keeps its role for as long as it is in the ranktable.
//!
//! The rule: let r = p/(p+d) from `default_p_rate`:`default_d_rate`, or ½ when both are 0
//! (this project does not run Motor's DIGS simulation; its fallback split is the same:
//! P = ⌈n/2⌉, D = ⌊n/2⌋). Each new instance, in id order, makes the instance count t; the
//! wanted P count is round-half-up(t·r), kept within 1..=t−1 once t ≥ 2; the instance becomes
//! P while the P count is below that, else D. So any n ≥ 2 has at least one P and one D, and
//! adding instances one by one gives the same split as deciding them all at once.

use serde::{Deserialize, Serialize};

/// A role the Controller assigns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Prefill,
    Decode,
}

impl Role {
    /// The path segment of `POST /v1/role/{…}` and the `currentRole` of `/v1/status`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Prefill => "prefill",
            Role::Decode => "decode",
        }
    }

    /// The role code in the Coordinator's refresh body.
    pub fn code(self) -> u8 {
        match self {
            Role::Prefill => crate::motor::instances::role::PREFILL,
            Role::Decode => crate::motor::instances::role::DECODE,
        }
    }

    pub fn opposite(self) -> Role {
        match self {
            Role::Prefill => Role::Decode,
            Role::Decode => Role::Prefill,
        }
    }
}

/// The P share as a fraction `num/den`.
fn share(p_rate: u64, d_rate: u64) -> (u64, u64) {
    if p_rate == 0 && d_rate == 0 {
        (1, 2)
    } else {
        (p_rate, p_rate + d_rate)
    }
}

/// Roles for `new` instances (ids in the order to decide) given `prefills` and `decodes`
/// already assigned.
pub fn decide(
    prefills: usize,
    decodes: usize,
    new: &[u64],
    p_rate: u64,
    d_rate: u64,
) -> Vec<(u64, Role)> {
    let (num, den) = share(p_rate, d_rate);
    let (mut p, mut d) = (prefills as u64, decodes as u64);
    new.iter()
        .map(|&id| {
            let t = p + d + 1;
            // round-half-up(t·num/den) = ⌊(2·t·num + den) / (2·den)⌋
            let mut want = (2 * t * num + den) / (2 * den);
            if t >= 2 {
                want = want.clamp(1, t - 1);
            }
            let role = if p < want {
                Role::Prefill
            } else {
                Role::Decode
            };
            match role {
                Role::Prefill => p += 1,
                Role::Decode => d += 1,
            }
            (id, role)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(v: &[(u64, Role)]) -> (usize, usize) {
        let p = v.iter().filter(|(_, r)| *r == Role::Prefill).count();
        (p, v.len() - p)
    }

    #[test]
    fn automatic_split_is_ceil_half_prefill() {
        for n in 1..=9u64 {
            let ids: Vec<u64> = (0..n).collect();
            let (p, d) = counts(&decide(0, 0, &ids, 0, 0));
            assert_eq!((p as u64, d as u64), (n.div_ceil(2), n / 2), "n={n}");
        }
        assert_eq!(
            decide(0, 0, &[4, 7], 0, 0),
            vec![(4, Role::Prefill), (7, Role::Decode)]
        );
    }

    #[test]
    fn rates_are_followed_with_one_of_each() {
        let ids: Vec<u64> = (0..4).collect();
        assert_eq!(counts(&decide(0, 0, &ids, 1, 3)), (1, 3));
        assert_eq!(counts(&decide(0, 0, &ids, 3, 1)), (3, 1));
        assert_eq!(counts(&decide(0, 0, &[0, 1], 1, 15)), (1, 1));
        assert_eq!(counts(&decide(0, 0, &[0, 1], 15, 1)), (1, 1));
        // Incremental equals all at once.
        let mut one_by_one = Vec::new();
        for id in 0..8u64 {
            let (p, d) = counts(&one_by_one);
            one_by_one.extend(decide(p, d, &[id], 2, 3));
        }
        assert_eq!(one_by_one, decide(0, 0, &(0..8).collect::<Vec<_>>(), 2, 3));
    }

    #[test]
    fn newcomers_fill_the_missing_role() {
        assert_eq!(decide(2, 0, &[9], 0, 0), vec![(9, Role::Decode)]);
        assert_eq!(decide(0, 2, &[9], 0, 0), vec![(9, Role::Prefill)]);
    }
}
