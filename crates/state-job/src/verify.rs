//! The job's end check: the final state against the run without failure.

use std::collections::BTreeMap;

use crate::dataflow::sink::SinkTotals;
use crate::operator::KeySummary;

/// How the final state compares with the run without failure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Every key's state and the sink's sums of keys and events are equal
    /// (exactly once).
    pub equal: bool,
    /// Keys whose state differs.
    pub differing_keys: usize,
    /// Keys with fewer events or adjustments than expected: lost records.
    pub keys_with_losses: usize,
    /// Records counted more than once (events and adjustments).
    pub duplicates: u64,
}

/// Compares key by key and the sink's sums; prints the first differences.
pub fn compare(
    expected: &BTreeMap<u64, KeySummary>,
    expected_sink: SinkTotals,
    actual: &BTreeMap<u64, KeySummary>,
    actual_sink: SinkTotals,
    print_mismatches: bool,
) -> Verdict {
    let mut verdict = Verdict::default();
    for (key, want) in expected {
        let got = actual.get(key);
        if got == Some(want) {
            continue;
        }
        verdict.differing_keys += 1;
        if print_mismatches && verdict.differing_keys <= 5 {
            println!("MISMATCH key {key}: expected {want:?}, got {got:?}");
        }
        let (events, adjustments) = got.map_or((0, 0), |g| (g.count, g.adjustment_count));
        if events < want.count || adjustments < want.adjustment_count {
            verdict.keys_with_losses += 1;
        }
        verdict.duplicates +=
            events.saturating_sub(want.count) + adjustments.saturating_sub(want.adjustment_count);
    }
    let extra: Vec<&KeySummary> = actual
        .iter()
        .filter(|(k, _)| !expected.contains_key(k))
        .map(|(_, v)| v)
        .collect();
    if !extra.is_empty() {
        verdict.differing_keys += extra.len();
        verdict.duplicates += extra
            .iter()
            .map(|s| s.count + s.adjustment_count)
            .sum::<u64>();
        if print_mismatches {
            println!("MISMATCH: {} keys exist only after recovery", extra.len());
        }
    }
    // The number of results depends on the parallelism (one per keyed
    // instance and window); the keys and events in them do not.
    let sink_equal =
        (expected_sink.keys, expected_sink.events) == (actual_sink.keys, actual_sink.events);
    if !sink_equal && print_mismatches {
        println!("MISMATCH sink: expected {expected_sink:?}, got {actual_sink:?}");
    }
    verdict.equal = verdict.differing_keys == 0 && sink_equal;
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(count: u64, adjustment_count: u64) -> KeySummary {
        KeySummary {
            count,
            sum: count,
            max: None,
            top_values: Vec::new(),
            buckets: Vec::new(),
            open_windows: Vec::new(),
            mean_window_size: None,
            adjustment_count,
            adjustments: adjustment_count,
            recent_count: count,
        }
    }

    #[test]
    fn counts_duplicates_and_losses() {
        let expected = BTreeMap::from([(1, summary(3, 1)), (2, summary(2, 0))]);
        let sink = SinkTotals::default();
        assert!(compare(&expected, sink, &expected.clone(), sink, false).equal);
        let actual = BTreeMap::from([(1, summary(5, 2)), (2, summary(1, 0)), (3, summary(1, 0))]);
        let verdict = compare(&expected, sink, &actual, sink, false);
        assert!(!verdict.equal);
        assert_eq!(verdict.duplicates, 2 + 1 + 1);
        assert_eq!(verdict.keys_with_losses, 1);
        assert_eq!(verdict.differing_keys, 3);
    }
}
