//! A subscriber's downlink (sans-IO): how many bits per second can reach it, and how to share them
//! between the videos it watches.
//!
//! webrtc-rs gives no send-side bandwidth estimate for forwarded streams (the SFU forwards without
//! transport-wide sequence numbers, and browsers send REMB only with abs-send-time), but every
//! subscriber reports loss in its RTCP receiver reports. The estimate follows the loss-based half of
//! Google Congestion Control (draft-ietf-rmcat-gcc §6): above 10 % loss *in two reports running*
//! (one lossy report is noise: a burst, a busy moment) it drops to what was actually delivered,
//! scaled by the loss; below 2 % it grows 8 % per report (receiver reports come about once a
//! second); in between it holds. It starts optimistic: a subscriber that never loses anything is
//! never held back.
//!
//! [`camera_cap`] shares the estimate: screen shares first (a shared screen is what people are
//! reading), then the cameras equally; each camera gets the highest simulcast layer its share
//! affords. Under pressure the cameras drop layers before a screen share is touched.

use edgemeet_shared::media::layer_for_bandwidth;

pub type Millis = u64;

pub const INITIAL_BPS: f64 = 10_000_000.0;
pub const MIN_BPS: f64 = 100_000.0;
pub const MAX_BPS: f64 = 50_000_000.0;
/// Above this fraction lost the estimate decreases…
pub const LOSS_HIGH: f64 = 0.10;
/// …below this one it increases.
pub const LOSS_LOW: f64 = 0.02;
/// What one screen share is budgeted before cameras get anything.
pub const SCREEN_BPS: f64 = 1_500_000.0;

#[derive(Debug, Clone)]
pub struct DownlinkEstimator {
    estimate: f64,
    /// The previous report was lossy too.
    lossy: bool,
    /// Bytes forwarded to the subscriber at the previous report, and when.
    last: Option<(u64, Millis)>,
}

impl Default for DownlinkEstimator {
    fn default() -> Self {
        DownlinkEstimator {
            estimate: INITIAL_BPS,
            lossy: false,
            last: None,
        }
    }
}

impl DownlinkEstimator {
    pub fn new() -> DownlinkEstimator {
        DownlinkEstimator::default()
    }

    pub fn estimate_bps(&self) -> f64 {
        self.estimate
    }

    /// A receiver report: `fraction_lost` as in RTCP (0–255 = 0–100 %), `bytes_sent` the total
    /// forwarded to this subscriber so far. Returns the new estimate.
    pub fn on_report(&mut self, fraction_lost: u8, bytes_sent: u64, now: Millis) -> f64 {
        let loss = fraction_lost as f64 / 256.0;
        let sent_bps = match self.last {
            Some((b, t)) if now > t => {
                Some(bytes_sent.saturating_sub(b) as f64 * 8_000.0 / (now - t) as f64)
            }
            _ => None,
        };
        self.last = Some((bytes_sent, now));
        let lossy = loss > LOSS_HIGH;
        if lossy && self.lossy {
            let base = sent_bps.unwrap_or(self.estimate).min(self.estimate);
            self.estimate = base * (1.0 - 0.5 * loss);
        } else if loss < LOSS_LOW {
            self.estimate *= 1.08;
        }
        self.lossy = lossy;
        self.estimate = self.estimate.clamp(MIN_BPS, MAX_BPS);
        self.estimate
    }
}

/// The highest camera layer each of `cameras` watched videos may use when the subscriber's
/// downlink is `estimate_bps` and it also watches `screens` screen shares.
pub fn camera_cap(estimate_bps: f64, screens: usize, cameras: usize) -> usize {
    let left = (estimate_bps - screens as f64 * SCREEN_BPS).max(0.0);
    let each = left / cameras.max(1) as f64;
    layer_for_bandwidth(each as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_loss_keeps_the_estimate_high() {
        let mut d = DownlinkEstimator::new();
        for i in 0..10 {
            d.on_report(0, i * 500_000, i * 1_000);
        }
        assert!(d.estimate_bps() >= INITIAL_BPS);
        assert!(d.estimate_bps() <= MAX_BPS);
    }

    #[test]
    fn heavy_loss_drops_to_what_was_delivered_and_recovers_slowly() {
        let mut d = DownlinkEstimator::new();
        let start = d.on_report(0, 0, 0);
        // One lossy report is not enough…
        assert_eq!(d.on_report(64, 250_000, 1_000), start);
        // …two running are: 2 Mbit/s forwarded, 25 % lost.
        let e = d.on_report(64, 500_000, 2_000);
        assert!((e - 2_000_000.0 * (1.0 - 0.5 * 0.25)).abs() < 1.0, "{e}");
        // Moderate loss holds it.
        assert_eq!(d.on_report(10, 750_000, 3_000), e);
        // Clean reports grow it 8 % each.
        let up = d.on_report(0, 1_000_000, 4_000);
        assert!((up - e * 1.08).abs() < 1.0);
    }

    #[test]
    fn the_estimate_stays_within_bounds() {
        let mut d = DownlinkEstimator::new();
        let mut bytes = 0;
        for i in 0..50 {
            bytes += 1_000;
            d.on_report(255, bytes, i * 1_000);
        }
        assert_eq!(d.estimate_bps(), MIN_BPS);
    }

    #[test]
    fn cameras_give_way_before_a_shared_screen() {
        // Plenty: every camera at full resolution.
        assert_eq!(camera_cap(10_000_000.0, 1, 3), 2);
        // 3 Mbit/s with a screen and three cameras: the screen keeps its 1.5 M, the cameras share
        // the rest (500 k each: the middle layer does not fit 85 % of it).
        assert_eq!(camera_cap(3_000_000.0, 1, 3), 0);
        // The same without the screen: the cameras get 1 M each, enough for the middle layer.
        assert_eq!(camera_cap(3_000_000.0, 0, 3), 1);
        // Less than the screen needs: cameras at the lowest layer, never nothing.
        assert_eq!(camera_cap(1_000_000.0, 1, 2), 0);
    }
}
