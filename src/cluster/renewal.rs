//! When a node's heartbeat runs, and which of its names each call renews: the names are spread over the heartbeat
//! interval in bounded batches, so that no single script call holds Redis for long (docs/scaling.md).
//!
//! Owns the schedule alone: at the start of each cycle it takes the names held then, cuts them into batches of at
//! most `batch` names, and spaces the calls evenly over the interval. A node's first cycle is shortened by a
//! random phase, so that nodes started together do not renew together. It must not read a clock, draw randomness
//! (the caller passes the phase) or know what a call says to Redis.

/// A node's heartbeat schedule: one script call at each due point, each with its batch of names.
#[derive(Debug)]
pub struct RenewalSchedule {
    /// The heartbeat interval, in milliseconds (at least 1).
    interval_ms: u64,
    /// The most names one call renews (at least 1).
    batch: usize,
    /// How long the first cycle lasts: a phase in `0..interval_ms`, drawn by the caller.
    first_cycle_ms: u64,
    /// The names of the current cycle, taken when it began.
    cycle: Vec<String>,
    /// How many of `cycle` earlier calls took.
    cursor: usize,
    /// When the current cycle began.
    cycle_start: u64,
    /// How long the current cycle lasts.
    cycle_ms: u64,
    /// The calls the current cycle makes, and how many were made.
    calls: u64,
    calls_made: u64,
    /// When the next call is due, in the caller's milliseconds.
    next_due: u64,
    /// No call was made yet.
    first: bool,
}

impl RenewalSchedule {
    /// A schedule for a heartbeat every `interval_ms`, renewing at most `batch` names per call. The first call is
    /// due at once (it tells Redis the node is alive); the first cycle lasts `phase_ms` (taken modulo the
    /// interval), every later one `interval_ms`.
    pub fn new(interval_ms: u64, batch: usize, phase_ms: u64) -> RenewalSchedule {
        let interval_ms = interval_ms.max(1);
        RenewalSchedule {
            interval_ms,
            batch: batch.max(1),
            first_cycle_ms: phase_ms % interval_ms,
            cycle: Vec::new(),
            cursor: 0,
            cycle_start: 0,
            cycle_ms: 0,
            calls: 0,
            calls_made: 0,
            next_due: 0,
            first: true,
        }
    }

    /// When the next call is due.
    pub fn next_due(&self) -> u64 {
        self.next_due
    }

    /// The names the call due at `now` renews. When a cycle begins, `held` is asked for every name held then; the
    /// batches of the cycle are cut from that list, so a name released later in the cycle may still be in one (the
    /// caller checks each name is still held before it sends it). Call it only once `now >= next_due()`.
    pub fn take_batch<I>(&mut self, now: u64, held: impl FnOnce() -> I) -> &[String]
    where
        I: IntoIterator<Item = String>,
    {
        if self.calls_made >= self.calls {
            self.begin_cycle(now, held);
        }
        let start = self.cursor.min(self.cycle.len());
        let end = start.saturating_add(self.batch).min(self.cycle.len());
        self.cursor = end;
        self.calls_made += 1;
        // Calls evenly spaced over the cycle: the last one's due point is the next cycle's start.
        let elapsed =
            u128::from(self.cycle_ms) * u128::from(self.calls_made) / u128::from(self.calls.max(1));
        self.next_due = self
            .cycle_start
            .saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX));
        self.cycle.get(start..end).unwrap_or_default()
    }

    fn begin_cycle<I>(&mut self, now: u64, held: impl FnOnce() -> I)
    where
        I: IntoIterator<Item = String>,
    {
        // Normally a cycle begins where the last one ended; a node that could not call for a whole interval
        // (Redis was away) begins from now rather than catch up in a burst.
        self.cycle_start = if self.first || now >= self.next_due.saturating_add(self.interval_ms) {
            now
        } else {
            self.next_due
        };
        self.cycle_ms = if self.first {
            self.first_cycle_ms
        } else {
            self.interval_ms
        };
        self.first = false;
        self.cycle.clear();
        self.cycle.extend(held());
        self.cursor = 0;
        self.calls = u64::try_from(self.cycle.len().div_ceil(self.batch))
            .unwrap_or(u64::MAX)
            .max(1);
        self.calls_made = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(count: usize) -> Vec<String> {
        (0..count).map(|i| format!("n{i}")).collect()
    }

    /// Runs the schedule from `start`, calling whenever a call is due, for `calls` calls: (due point, batch size).
    fn run(schedule: &mut RenewalSchedule, held: &[String], calls: usize) -> Vec<(u64, usize)> {
        (0..calls)
            .map(|_| {
                let at = schedule.next_due();
                let batch = schedule.take_batch(at, || held.to_vec()).len();
                (at, batch)
            })
            .collect()
    }

    #[test]
    fn the_first_call_is_due_at_once() {
        let schedule = RenewalSchedule::new(5_000, 500, 1_234);
        assert_eq!(schedule.next_due(), 0);
    }

    #[test]
    fn no_call_renews_more_than_the_batch_and_a_cycle_renews_every_name_once() {
        let held = names(2_050);
        let mut schedule = RenewalSchedule::new(5_000, 500, 0);
        let sizes: Vec<usize> = run(&mut schedule, &held, 10).iter().map(|c| c.1).collect();
        assert_eq!(sizes, vec![500, 500, 500, 500, 50, 500, 500, 500, 500, 50]);
    }

    #[test]
    fn the_calls_of_a_cycle_are_spread_evenly_over_the_interval() {
        let held = names(2_000);
        let mut schedule = RenewalSchedule::new(5_000, 500, 1_000);
        let calls = run(&mut schedule, &held, 10);
        let due: Vec<u64> = calls.iter().map(|&(at, _)| at).collect();
        // First cycle: four calls over the 1,000 ms phase; then four over each 5,000 ms interval.
        assert_eq!(
            due,
            vec![0, 250, 500, 750, 1_000, 2_250, 3_500, 4_750, 6_000, 7_250]
        );
    }

    #[test]
    fn the_phase_shifts_every_later_cycle() {
        let held = names(10);
        let mut early = RenewalSchedule::new(5_000, 500, 700);
        let mut late = RenewalSchedule::new(5_000, 500, 3_100);
        let early_due: Vec<u64> = run(&mut early, &held, 3).iter().map(|c| c.0).collect();
        let late_due: Vec<u64> = run(&mut late, &held, 3).iter().map(|c| c.0).collect();
        assert_eq!(early_due, vec![0, 700, 5_700]);
        assert_eq!(late_due, vec![0, 3_100, 8_100]);
    }

    #[test]
    fn with_no_names_there_is_still_one_call_per_interval() {
        let mut schedule = RenewalSchedule::new(200, 500, 0);
        let calls = run(&mut schedule, &[], 4);
        assert_eq!(calls, vec![(0, 0), (0, 0), (200, 0), (400, 0)]);
    }

    #[test]
    fn names_held_after_a_cycle_began_wait_for_the_next_cycle() {
        let mut schedule = RenewalSchedule::new(1_000, 2, 0);
        assert_eq!(schedule.take_batch(0, || names(0)).len(), 0);
        assert_eq!(schedule.take_batch(0, || names(3)), ["n0", "n1"]);
        let due = schedule.next_due();
        assert_eq!(due, 500);
        assert_eq!(schedule.take_batch(due, || names(4)), ["n2"]);
        let due = schedule.next_due();
        assert_eq!(schedule.take_batch(due, || names(4)), ["n0", "n1"]);
        assert_eq!(
            schedule.take_batch(schedule.next_due(), || names(4)),
            ["n2", "n3"]
        );
    }

    #[test]
    fn a_node_that_missed_a_whole_interval_starts_again_from_now() {
        let held = names(4);
        let mut schedule = RenewalSchedule::new(1_000, 2, 0);
        run(&mut schedule, &held, 4);
        assert_eq!(schedule.next_due(), 1_000);
        // Redis was away until 9,000: one cycle from there, not eight cycles' calls at once.
        schedule.take_batch(9_000, || held.clone());
        assert_eq!(schedule.next_due(), 9_500);
    }
}
