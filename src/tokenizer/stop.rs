//! Stop strings over streamed text: [`StopMatcher`] sees the detokenized deltas and decides what
//! may be sent to the client.
//!
//! - The text is cut at the first stop string to *complete* (earliest end; at equal ends, the
//!   longer one). This choice does not depend on how the text was split into deltas.
//! - Output stops before the stop string, or after it with `include_stop_str_in_output`;
//!   nothing after it is ever emitted.
//! - The longest tail of the text that is still the beginning of some stop string is held back,
//!   so a stop string arriving over several deltas never leaks to a streaming client;
//!   [`StopMatcher::finish`] releases it when generation ends for another reason.
//!
//! Empty stop strings are ignored (they would match before any text). Indices in
//! [`StopResult::stopped`] refer to the list given to [`StopMatcher::new`].

/// What one delta released.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopResult {
    /// Text that may be sent now.
    pub emit: String,
    /// Set once a stop string matched: its index in the list given to [`StopMatcher::new`].
    /// Generation should end; later pushes emit nothing and repeat the index.
    pub stopped: Option<usize>,
}

/// Stop-string matcher of one sequence.
#[derive(Debug, Clone)]
pub struct StopMatcher {
    /// (index in the caller's list, stop string), empty strings dropped.
    stops: Vec<(usize, String)>,
    include_stop_str_in_output: bool,
    /// Text received but not released: a tail that may begin a stop string.
    held: String,
    stopped: Option<usize>,
}

impl StopMatcher {
    /// A matcher for `stops`.
    pub fn new(stops: Vec<String>, include_stop_str_in_output: bool) -> StopMatcher {
        StopMatcher {
            stops: stops
                .into_iter()
                .enumerate()
                .filter(|(_, s)| !s.is_empty())
                .collect(),
            include_stop_str_in_output,
            held: String::new(),
            stopped: None,
        }
    }

    /// True when there is no stop string to watch for (every delta passes straight through).
    pub fn is_empty(&self) -> bool {
        self.stops.is_empty()
    }

    /// The index of the stop string that matched, if one did.
    pub fn stopped(&self) -> Option<usize> {
        self.stopped
    }

    /// Feeds the next piece of text.
    pub fn push(&mut self, delta: &str) -> StopResult {
        if self.stopped.is_some() {
            return StopResult {
                emit: String::new(),
                stopped: self.stopped,
            };
        }
        if self.stops.is_empty() {
            return StopResult {
                emit: delta.to_string(),
                stopped: None,
            };
        }
        let mut buf = std::mem::take(&mut self.held);
        buf.push_str(delta);

        if let Some((which, start, end)) = self.first_match(&buf) {
            self.stopped = Some(which);
            let cut = if self.include_stop_str_in_output {
                end
            } else {
                start
            };
            buf.truncate(cut);
            return StopResult {
                emit: buf,
                stopped: Some(which),
            };
        }

        let keep = self.partial_tail(&buf);
        self.held = buf.split_off(buf.len() - keep);
        StopResult {
            emit: buf,
            stopped: None,
        }
    }

    /// Ends the stream: returns the held-back text (nothing if a stop string matched).
    pub fn finish(&mut self) -> String {
        if self.stopped.is_some() {
            self.held.clear();
            return String::new();
        }
        std::mem::take(&mut self.held)
    }

    /// The stop occurrence in `buf` that ends first (longest on ties): (index, start, end).
    fn first_match(&self, buf: &str) -> Option<(usize, usize, usize)> {
        let mut best: Option<(usize, usize, usize)> = None;
        for (idx, stop) in &self.stops {
            if let Some(start) = buf.find(stop.as_str()) {
                let end = start + stop.len();
                let better = match best {
                    None => true,
                    Some((_, bs, be)) => end < be || (end == be && start < bs),
                };
                if better {
                    best = Some((*idx, start, end));
                }
            }
        }
        best
    }

    /// Length in bytes of the longest proper tail of `buf` that begins some stop string.
    fn partial_tail(&self, buf: &str) -> usize {
        let longest = self.stops.iter().map(|(_, s)| s.len()).max().unwrap_or(0);
        // Candidate starts: character boundaries within the last `longest - 1` bytes.
        let lo = buf.len().saturating_sub(longest.saturating_sub(1));
        for (i, _) in buf.char_indices().skip_while(|(i, _)| *i < lo) {
            let tail = &buf[i..];
            if self.stops.iter().any(|(_, s)| s.starts_with(tail)) {
                return buf.len() - i;
            }
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], include: bool, deltas: &[&str]) -> (Vec<String>, Option<usize>, String) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect(), include);
        let mut emitted = Vec::new();
        let mut stopped = None;
        for d in deltas {
            let r = m.push(d);
            emitted.push(r.emit);
            if r.stopped.is_some() {
                stopped = r.stopped;
            }
        }
        (emitted, stopped, m.finish())
    }

    #[test]
    fn stop_spanning_deltas_never_leaks() {
        let (e, s, f) = run(&["STOP"], false, &["hello S", "TO", "P world"]);
        assert_eq!(e, ["hello ", "", ""]);
        assert_eq!((s, f.as_str()), (Some(0), ""));
        let (e, s, _) = run(&["STOP"], true, &["hello S", "TO", "P world"]);
        assert_eq!(e.concat(), "hello STOP");
        assert_eq!(s, Some(0));
    }

    #[test]
    fn false_start_is_released() {
        let (e, s, f) = run(&["STOP"], false, &["ST", "OX", "S"]);
        assert_eq!(e, ["", "STOX", ""]);
        assert_eq!((s, f.as_str()), (None, "S"));
    }

    #[test]
    fn overlapping_candidates_first_to_complete_wins() {
        // "b" completes before "abc": same answer however the text is split.
        for deltas in [&["abc"][..], &["a", "b", "c"], &["ab", "c"]] {
            let (e, s, _) = run(&["abc", "b"], false, deltas);
            assert_eq!((e.concat(), s), ("a".to_string(), Some(1)), "{deltas:?}");
        }
        // equal ends: the longer one
        let (e, s, _) = run(&["c", "bc"], true, &["abcd"]);
        assert_eq!((e.concat(), s), ("abc".to_string(), Some(1)));
        // self-overlapping stop: "aab" inside "aaab"
        let (e, s, _) = run(&["aab"], false, &["a", "a", "a", "b"]);
        assert_eq!((e.concat(), s), ("a".to_string(), Some(0)));
    }

    #[test]
    fn unicode_boundaries() {
        let (e, s, _) = run(&["你好"], false, &["a你", "好b"]);
        assert_eq!((e.concat(), s), ("a".to_string(), Some(0)));
        // a stop sharing only a partial UTF-8 prefix byte with the text is no match
        let (e, s, f) = run(&["你好"], false, &["你", "们"]);
        assert_eq!((e.concat() + &f, s), ("你们".to_string(), None));
        let (e, _, f) = run(&["🚀!"], true, &["x🚀", "🚀!", "tail"]);
        assert_eq!(e.concat() + &f, "x🚀🚀!");
    }

    #[test]
    fn stop_at_the_very_start() {
        let (e, s, _) = run(&["<end>"], false, &["<end>rest"]);
        assert_eq!((e.concat(), s), (String::new(), Some(0)));
        let (e, s, _) = run(&["<end>"], true, &["<e", "nd>rest"]);
        assert_eq!((e.concat(), s), ("<end>".to_string(), Some(0)));
    }

    #[test]
    fn after_stop_nothing_more_and_empty_stops_ignored() {
        let mut m = StopMatcher::new(vec![String::new(), "x".into()], false);
        assert_eq!(
            m.push("ax"),
            StopResult {
                emit: "a".into(),
                stopped: Some(1)
            }
        );
        assert_eq!(
            m.push("more"),
            StopResult {
                emit: String::new(),
                stopped: Some(1)
            }
        );
        assert_eq!(m.finish(), "");
        let mut none = StopMatcher::new(vec![String::new()], false);
        assert!(none.is_empty());
        assert_eq!(none.push("abc").emit, "abc");
    }

    #[test]
    fn holds_only_what_can_still_match() {
        let mut m = StopMatcher::new(vec!["abcd".into(), "xyz".into()], false);
        assert_eq!(m.push("zzab").emit, "zz");
        assert_eq!(m.push("x").emit, "ab"); // "x" may start "xyz"
        assert_eq!(m.finish(), "x");
    }

    #[test]
    fn streamed_equals_one_shot_on_random_splits() {
        // Deterministic pseudo-random splits of a text with several candidates.
        let text = "the cat sat on the mat; the end. ENDING then END!";
        let stops = ["END", "mat;", "at on t"];
        let (one, s1, f1) = run(&stops, true, &[text]);
        let mut seed = 12345u64;
        for _ in 0..200 {
            let mut pieces = Vec::new();
            let mut rest = text;
            while !rest.is_empty() {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let n = 1 + (seed >> 33) as usize % 5;
                let n = n.min(rest.len());
                pieces.push(&rest[..n]);
                rest = &rest[n..];
            }
            let (e, s, f) = run(&stops, true, &pieces);
            assert_eq!((e.concat(), s, f.clone()), (one.concat(), s1, f1.clone()));
        }
        assert_eq!(
            (one.concat(), s1),
            ("the cat sat on t".to_string(), Some(2))
        );
    }
}
