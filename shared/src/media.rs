//! Media presets shared by the client (what it sends) and the SFU (what it forwards).

/// One simulcast encoding of the camera.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimulcastLayer {
    /// RTP stream id (`rid`) in the SDP and in `sendEncodings`.
    pub rid: &'static str,
    pub scale_resolution_down_by: f64,
    pub max_bitrate_bps: u32,
    pub max_framerate: f64,
}

/// Camera simulcast, lowest first, for a 1280×720 capture: 320×180, 640×360, 1280×720.
pub const CAMERA_SIMULCAST: [SimulcastLayer; 3] = [
    SimulcastLayer {
        rid: "q",
        scale_resolution_down_by: 4.0,
        max_bitrate_bps: 150_000,
        max_framerate: 15.0,
    },
    SimulcastLayer {
        rid: "h",
        scale_resolution_down_by: 2.0,
        max_bitrate_bps: 500_000,
        max_framerate: 30.0,
    },
    SimulcastLayer {
        rid: "f",
        scale_resolution_down_by: 1.0,
        max_bitrate_bps: 1_700_000,
        max_framerate: 30.0,
    },
];

/// Capture height the presets are made for.
pub const CAMERA_CAPTURE_HEIGHT: u32 = 720;

/// The smallest layer that fills a tile `rendered_height` CSS pixels tall (times the device pixel
/// ratio), allowing 25 % upscaling before asking for more. `None` for a hidden tile (height 0).
pub fn layer_for_tile(rendered_height: u32, device_pixel_ratio: f64) -> Option<usize> {
    if rendered_height == 0 {
        return None;
    }
    let needed = rendered_height as f64 * device_pixel_ratio.max(1.0);
    let layer = CAMERA_SIMULCAST
        .iter()
        .position(|l| (CAMERA_CAPTURE_HEIGHT as f64 / l.scale_resolution_down_by) * 1.25 >= needed)
        .unwrap_or(CAMERA_SIMULCAST.len() - 1);
    Some(layer)
}

/// The highest layer whose bitrate fits 85 % of a subscriber's estimated downlink (the lowest if
/// none does: a frozen picture is worse than a soft one).
pub fn layer_for_bandwidth(estimated_bps: u64) -> usize {
    let budget = estimated_bps as f64 * 0.85;
    CAMERA_SIMULCAST
        .iter()
        .rposition(|l| l.max_bitrate_bps as f64 <= budget)
        .unwrap_or(0)
}

/// The simulcast layer (rid) a received camera picture of this height comes from: the nearest
/// layer's height. `None` for no picture.
pub fn layer_for_height(height: u32) -> Option<&'static str> {
    if height == 0 {
        return None;
    }
    let full = CAMERA_CAPTURE_HEIGHT as f64;
    CAMERA_SIMULCAST
        .iter()
        .min_by(|a, b| {
            let da = (full / a.scale_resolution_down_by - height as f64).abs();
            let db = (full / b.scale_resolution_down_by - height as f64).abs();
            da.total_cmp(&db)
        })
        .map(|l| l.rid)
}

#[cfg(test)]
mod tests {
    #[test]
    fn layers_by_received_height() {
        use super::layer_for_height;
        assert_eq!(layer_for_height(180), Some("q"));
        assert_eq!(layer_for_height(176), Some("q"));
        assert_eq!(layer_for_height(360), Some("h"));
        assert_eq!(layer_for_height(720), Some("f"));
        assert_eq!(layer_for_height(0), None);
    }

    use super::*;

    #[test]
    fn tiles_ask_for_the_smallest_layer_that_fills_them() {
        assert_eq!(layer_for_tile(0, 1.0), None);
        assert_eq!(layer_for_tile(120, 1.0), Some(0));
        assert_eq!(layer_for_tile(225, 1.0), Some(0)); // 180p upscaled 25 %
        assert_eq!(layer_for_tile(226, 1.0), Some(1));
        assert_eq!(layer_for_tile(450, 1.0), Some(1));
        assert_eq!(layer_for_tile(451, 1.0), Some(2));
        assert_eq!(layer_for_tile(2000, 1.0), Some(2));
        assert_eq!(
            layer_for_tile(200, 2.0),
            Some(1),
            "a HiDPI screen needs twice the pixels"
        );
    }

    #[test]
    fn bandwidth_caps_the_layer() {
        assert_eq!(layer_for_bandwidth(5_000_000), 2);
        assert_eq!(layer_for_bandwidth(1_000_000), 1);
        assert_eq!(layer_for_bandwidth(300_000), 0);
        assert_eq!(layer_for_bandwidth(50_000), 0);
    }

    #[test]
    fn presets_are_ordered_lowest_first() {
        assert!(CAMERA_SIMULCAST
            .windows(2)
            .all(|w| w[0].max_bitrate_bps < w[1].max_bitrate_bps
                && w[0].scale_resolution_down_by > w[1].scale_resolution_down_by));
        assert_eq!(CAMERA_SIMULCAST.map(|l| l.rid), ["q", "h", "f"]);
    }
}
