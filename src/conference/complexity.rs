//! How much the Opus encoders of the mixes may spend: the configured complexity while the
//! mixing clock has room, less when it runs out of time.
//!
//! Encoding the mixes is most of a tick's work in many small conferences (the shared mix of
//! each, and each talker's own mix). At complexity 5 libopus spends ~140 us on a 20 ms frame
//! of this machine's test signal, at 0 about 60 us (`benches/README.md`, media). When the
//! ticks take most of their 20 ms, the alternative to a cheaper encoder is the clock falling
//! behind and whole periods being skipped, which every listener hears as dropouts; so the
//! [`Governor`] lowers the complexity then and raises it back when the load has gone
//! (WebRTC's own Opus encoder lowers its complexity on slow devices for the same reason).
//!
//! Pure: it sees the share of each period the tick took and answers with the complexity; the
//! mixing clock measures, and the runtime applies it to every encoder before it encodes.

/// Load (the smoothed share of the 20 ms period a tick takes) above which the complexity
/// goes down.
pub const HIGH_LOAD: f32 = 0.7;
/// Load below which it goes back up.
pub const LOW_LOAD: f32 = 0.35;
/// Weight of each tick in the smoothed load (a time constant of ~10 ticks, 200 ms).
const SMOOTHING: f32 = 0.1;
/// Ticks between two steps down (0.5 s): each step gets time to show its effect.
pub const DOWN_AFTER: u32 = 25;
/// Ticks between two steps up (5 s): slowly, so that a burst does not make it flap.
pub const UP_AFTER: u32 = 250;
/// Complexity given up per step down.
const DOWN_STEP: u8 = 2;

/// The complexity controller of the mixing clock.
#[derive(Debug, Clone)]
pub struct Governor {
    max: u8,
    current: u8,
    load: f32,
    since_change: u32,
}

impl Governor {
    /// Starts at `max` (the configured complexity, at most 10), which it never exceeds.
    pub fn new(max: u8) -> Self {
        let max = max.min(10);
        Governor {
            max,
            current: max,
            load: 0.0,
            since_change: 0,
        }
    }

    /// The complexity to encode with.
    pub fn complexity(&self) -> u8 {
        self.current
    }

    /// The smoothed load (0..=1).
    pub fn load(&self) -> f32 {
        self.load
    }

    /// One tick took `busy` of its period (elapsed / 20 ms) after `skipped` periods were
    /// given up (each counts as a fully busy one). Returns the new complexity if it changed.
    pub fn observe(&mut self, busy: f32, skipped: u32) -> Option<u8> {
        let busy = if busy.is_finite() {
            busy.clamp(0.0, 1.0)
        } else {
            1.0
        };
        for _ in 0..skipped.min(50) {
            self.load += (1.0 - self.load) * SMOOTHING;
        }
        self.load += (busy - self.load) * SMOOTHING;
        self.since_change = self.since_change.saturating_add(skipped.saturating_add(1));
        let next = if self.load > HIGH_LOAD && self.since_change >= DOWN_AFTER {
            self.current.saturating_sub(DOWN_STEP)
        } else if self.load < LOW_LOAD && self.since_change >= UP_AFTER {
            (self.current + 1).min(self.max)
        } else {
            self.current
        };
        if next == self.current {
            return None;
        }
        self.current = next;
        self.since_change = 0;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `ticks` ticks at `busy`; returns the complexity after each change, with the tick
    /// (counted from the start of this run) it happened on.
    fn run(g: &mut Governor, ticks: u32, busy: f32) -> Vec<(u32, u8)> {
        (1..=ticks)
            .filter_map(|t| g.observe(busy, 0).map(|c| (t, c)))
            .collect()
    }

    #[test]
    fn overload_steps_down_to_zero_and_idle_climbs_back_to_the_configured_level() {
        let mut g = Governor::new(5);
        assert_eq!(g.complexity(), 5);
        // A full clock: down by 2 every half second once the smoothed load is over 0.7.
        let down = run(&mut g, 200, 1.0);
        assert_eq!(
            down.iter().map(|&(_, c)| c).collect::<Vec<_>>(),
            vec![3, 1, 0]
        );
        assert_eq!(
            down[0].0, DOWN_AFTER,
            "the first step waits for its hold time"
        );
        for w in down.windows(2) {
            assert_eq!(w[1].0 - w[0].0, DOWN_AFTER);
        }
        assert_eq!(g.complexity(), 0);
        // Light load: one step up per 5 s, never above the configured 5.
        let up = run(&mut g, 2000, 0.1);
        assert_eq!(
            up.iter().map(|&(_, c)| c).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        for w in up.windows(2) {
            assert_eq!(w[1].0 - w[0].0, UP_AFTER);
        }
        assert_eq!(g.complexity(), 5);
    }

    #[test]
    fn between_the_thresholds_nothing_changes() {
        let mut g = Governor::new(5);
        assert!(run(&mut g, 5000, 0.5).is_empty());
        run(&mut g, 200, 1.0);
        let low = g.complexity();
        assert!(low < 5);
        assert!(
            run(&mut g, 5000, 0.5).is_empty(),
            "no climb at a middling load"
        );
        assert_eq!(g.complexity(), low);
    }

    #[test]
    fn a_short_burst_does_not_lower_it() {
        let mut g = Governor::new(5);
        run(&mut g, 500, 0.2);
        // 100 ms of full ticks: the smoothed load stays under the threshold.
        assert!(run(&mut g, 5, 1.0).is_empty());
        assert!(g.load() < HIGH_LOAD);
        assert_eq!(g.complexity(), 5);
    }

    #[test]
    fn skipped_periods_count_as_overload() {
        let mut g = Governor::new(5);
        let mut changes = Vec::new();
        // Quick ticks, but each after the clock gave up 10 periods.
        for _ in 0..10 {
            changes.extend(g.observe(0.1, 10));
        }
        assert_eq!(changes.first(), Some(&3));
    }

    #[test]
    fn bounds_and_odd_measurements() {
        let mut g = Governor::new(12);
        assert_eq!(g.complexity(), 10, "libopus' range is 0..=10");
        assert!(run(&mut g, 1000, 0.0).is_empty(), "never above the maximum");
        let mut z = Governor::new(0);
        assert!(run(&mut z, 1000, 1.0).is_empty());
        assert!(run(&mut z, 1000, 0.0).is_empty());
        let mut n = Governor::new(5);
        for busy in [f32::NAN, f32::INFINITY, -3.0, 40.0] {
            n.observe(busy, u32::MAX);
            assert!((0.0..=1.0).contains(&n.load()));
        }
    }
}
