//! [`OpTimes`]: where one model step's time went, operation by operation (summed over the
//! layers), for the debug log (`MINDIE_LOG_LEVEL=debug`: one `cpu step` line per step next to
//! the engine's `engine step` line). Taking the times costs a clock read per operation and
//! layer (~170 a step for a 24-layer model: microseconds against steps of milliseconds).

use std::fmt;
use std::time::Instant;

/// The operations of a decoder step, in the order they run.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    /// RMSNorms and residual adds.
    Norm,
    /// The q/k/v projections.
    Qkv,
    /// RoPE and the KV cache writes.
    RopeKv,
    Attention,
    /// The attention output projection.
    OProj,
    /// Gate and up projections with the activation.
    GateUp,
    Down,
    /// Final norm and LM head.
    Head,
}

const OPS: [(Op, &str); 8] = [
    (Op::Norm, "norm"),
    (Op::Qkv, "qkv"),
    (Op::RopeKv, "rope_kv"),
    (Op::Attention, "attention"),
    (Op::OProj, "o_proj"),
    (Op::GateUp, "gate_up"),
    (Op::Down, "down"),
    (Op::Head, "head"),
];

/// Seconds per [`Op`] since [`OpTimes::start`].
pub struct OpTimes {
    secs: [f64; OPS.len()],
    last: Instant,
}

impl OpTimes {
    pub fn start() -> Self {
        OpTimes {
            secs: [0.0; OPS.len()],
            last: Instant::now(),
        }
    }

    /// Charges the time since the previous lap (or the start) to `op`.
    pub fn lap(&mut self, op: Op) {
        let now = Instant::now();
        self.secs[op as usize] += (now - self.last).as_secs_f64();
        self.last = now;
    }

    /// Seconds charged to `op` so far.
    pub fn secs(&self, op: Op) -> f64 {
        self.secs[op as usize]
    }
}

/// `norm=0.4ms qkv=6.1ms …`: every operation, in milliseconds.
impl fmt::Display for OpTimes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (op, name)) in OPS.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{name}={:.1}ms", self.secs(*op) * 1e3)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_add_to_their_operation_and_print_in_order() {
        let mut t = OpTimes::start();
        std::thread::sleep(std::time::Duration::from_millis(3));
        t.lap(Op::Attention);
        t.lap(Op::Qkv);
        std::thread::sleep(std::time::Duration::from_millis(2));
        t.lap(Op::Attention);
        assert!(t.secs(Op::Attention) >= 0.005, "{}", t.secs(Op::Attention));
        assert!(t.secs(Op::Qkv) < 0.002);
        assert_eq!(t.secs(Op::Down), 0.0);
        let s = t.to_string();
        let names: Vec<&str> = s.split(' ').map(|p| p.split('=').next().unwrap()).collect();
        assert_eq!(
            names,
            [
                "norm",
                "qkv",
                "rope_kv",
                "attention",
                "o_proj",
                "gate_up",
                "down",
                "head"
            ]
        );
        assert!(s.split(' ').all(|p| p.ends_with("ms")), "{s}");
    }
}
