//! The layer assignment of a model split across nodes (a pipeline by layers): which
//! contiguous decoder layers each node holds. Node 0 is the master: it also holds the token
//! embedding, the final norm and the LM head (it embeds the batch and samples), so by default
//! it takes fewer layers: the layers are spread so that each node holds about the same weight
//! bytes. Every slave holds at least one layer; the master may hold none (a model whose
//! embedding outweighs a fair share). An operator may fix the counts instead with
//! [`LAYERS_ENV`] (layer counts in rank order, e.g. `10,11,11`).

use std::ops::Range;

/// Env var: comma-separated layer counts per node in rank order (master first).
pub const LAYERS_ENV: &str = "MINDIE_PIPELINE_LAYERS";

/// Why no assignment could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error(
        "the model has {layers} decoder layers; {slaves} slave node(s) need at least one each"
    )]
    TooFewLayers { layers: usize, slaves: usize },
    #[error("{LAYERS_ENV} = {value:?}: {rule}")]
    Override { value: String, rule: String },
}

/// Layer ranges for `nodes` nodes (master first) over `layers` decoder layers, balancing
/// weight bytes: `layer_bytes` per decoder layer, `ends_bytes` for what only the master holds.
pub fn balanced(
    layers: usize,
    nodes: usize,
    layer_bytes: u64,
    ends_bytes: u64,
) -> Result<Vec<Range<usize>>, SplitError> {
    let slaves = nodes.saturating_sub(1);
    if layers < slaves || nodes == 0 {
        return Err(SplitError::TooFewLayers { layers, slaves });
    }
    let total = layers as u64 * layer_bytes + ends_bytes;
    let share = total / nodes as u64;
    // Round to the nearest layer count that brings the master closest to a fair share.
    let master = (share.saturating_sub(ends_bytes) + layer_bytes / 2)
        .checked_div(layer_bytes)
        .map_or(layers / nodes, |n| n as usize);
    let master = master.min(layers - slaves);
    Ok(ranges(&spread(master, layers - master, slaves)))
}

/// Counts for the master (`master`) and `rest` layers spread over `slaves` (earlier slaves
/// take the remainder).
fn spread(master: usize, rest: usize, slaves: usize) -> Vec<usize> {
    let mut counts = vec![master];
    for i in 0..slaves {
        counts.push(rest / slaves + usize::from(i < rest % slaves));
    }
    counts
}

fn ranges(counts: &[usize]) -> Vec<Range<usize>> {
    let mut start = 0;
    counts
        .iter()
        .map(|&n| {
            let r = start..start + n;
            start += n;
            r
        })
        .collect()
}

/// Layer ranges from an operator's [`LAYERS_ENV`] value.
pub fn from_counts(
    value: &str,
    layers: usize,
    nodes: usize,
) -> Result<Vec<Range<usize>>, SplitError> {
    let bad = |rule: String| SplitError::Override {
        value: value.to_string(),
        rule,
    };
    let counts: Vec<usize> = value
        .split(',')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad("must be comma-separated non-negative integers".into()))?;
    if counts.len() != nodes {
        return Err(bad(format!(
            "{} count(s) for {nodes} node(s) of the ranktable; give one per node, master first",
            counts.len()
        )));
    }
    if counts.iter().sum::<usize>() != layers {
        return Err(bad(format!(
            "the counts add up to {}, the model has {layers} decoder layers",
            counts.iter().sum::<usize>()
        )));
    }
    if counts.iter().skip(1).any(|&n| n == 0) {
        return Err(bad("every slave needs at least one layer".into()));
    }
    Ok(ranges(&counts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_gives_the_master_fewer_layers_for_its_embedding() {
        // 24 layers of 10 bytes, ends of 60 bytes, 2 nodes: 300 total, 150 each → master 9.
        assert_eq!(balanced(24, 2, 10, 60), Ok(vec![0..9, 9..24]));
        // Three nodes: 100 each → master 4, the other 20 split 10/10.
        assert_eq!(balanced(24, 3, 10, 60), Ok(vec![0..4, 4..14, 14..24]));
        // Remainders go to the earlier slaves.
        assert_eq!(balanced(7, 3, 10, 0), Ok(vec![0..2, 2..5, 5..7]));
    }

    #[test]
    fn a_heavy_embedding_leaves_the_master_no_layers_but_every_slave_one() {
        assert_eq!(balanced(2, 2, 10, 1000), Ok(vec![0..0, 0..2]));
        assert_eq!(balanced(2, 3, 10, 1000), Ok(vec![0..0, 0..1, 1..2]));
        assert_eq!(
            balanced(1, 3, 10, 0),
            Err(SplitError::TooFewLayers {
                layers: 1,
                slaves: 2
            })
        );
    }

    #[test]
    fn ranges_cover_every_layer_once() {
        for layers in 1..40 {
            for nodes in 1..=layers.min(6) + 1 {
                let Ok(r) = balanced(layers, nodes, 7, 30) else {
                    assert!(layers < nodes - 1);
                    continue;
                };
                assert_eq!(r.len(), nodes);
                assert_eq!(r[0].start, 0);
                assert_eq!(r[nodes - 1].end, layers);
                assert!(r.windows(2).all(|w| w[0].end == w[1].start));
                assert!(r.iter().skip(1).all(|x| !x.is_empty()));
            }
        }
    }

    #[test]
    fn operator_counts_are_checked() {
        assert_eq!(from_counts("1, 1", 2, 2), Ok(vec![0..1, 1..2]));
        assert_eq!(from_counts("0,2", 2, 2), Ok(vec![0..0, 0..2]));
        for (v, nodes, why) in [
            ("1,1,1", 2, "3 count(s) for 2 node(s)"),
            ("1,2", 2, "add up to 3"),
            ("2,0", 2, "every slave"),
            ("a,1", 2, "non-negative integers"),
        ] {
            let e = from_counts(v, 2, nodes).expect_err(v).to_string();
            assert!(e.contains(why) && e.contains(LAYERS_ENV), "{e}");
        }
    }
}
