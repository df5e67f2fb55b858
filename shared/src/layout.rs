//! Where tiles go on the stage: pure geometry the room page applies (and tests check natively).
//!
//! - [`grid`]: N tiles of 16:9 filling a `w`×`h` area — columns × rows chosen so the tiles are as big
//!   as they can be, not a fixed row.
//! - [`page_size`]: how many tiles fit on one page before they get smaller than a readable minimum
//!   (a phone shows six people as 2×3; more go to further pages).
//! - [`strip`]: the filmstrip under a featured tile (speaker view, a shared screen).

/// Tiles are 16:9.
pub const ASPECT: f64 = 16.0 / 9.0;
/// The smallest tile worth showing (CSS pixels wide): below this, tiles go to a further page.
pub const MIN_TILE_W: f64 = 160.0;

/// A grid of equal tiles.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grid {
    pub cols: u32,
    pub rows: u32,
    pub tile_w: f64,
    pub tile_h: f64,
}

/// The biggest equal 16:9 tiles for `n` tiles in a `w`×`h` area with `gap` between them.
pub fn grid(n: u32, w: f64, h: f64, gap: f64) -> Grid {
    let n = n.max(1);
    let (w, h) = (w.max(0.0), h.max(0.0));
    let mut best = Grid {
        cols: 1,
        rows: n,
        tile_w: 0.0,
        tile_h: 0.0,
    };
    for cols in 1..=n {
        let rows = n.div_ceil(cols);
        let by_width = (w - gap * (cols - 1) as f64) / cols as f64;
        let by_height = (h - gap * (rows - 1) as f64) / rows as f64 * ASPECT;
        let tile_w = by_width.min(by_height).max(0.0);
        if tile_w > best.tile_w + 0.01 {
            best = Grid {
                cols,
                rows,
                tile_w,
                tile_h: tile_w / ASPECT,
            };
        }
    }
    best
}

/// How many of `n` tiles go on one page of a `w`×`h` area: all of them if they stay at least
/// [`MIN_TILE_W`] wide (or if even one tile is smaller than that: a tiny window), fewer otherwise.
pub fn page_size(n: u32, w: f64, h: f64, gap: f64) -> u32 {
    let n = n.max(1);
    (1..=n)
        .rev()
        .find(|&k| grid(k, w, h, gap).tile_w >= MIN_TILE_W)
        .unwrap_or(1)
}

/// A filmstrip: a row of `thumb_h`-tall 16:9 thumbnails across `w`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Strip {
    /// How many thumbnails fit side by side.
    pub fits: u32,
    pub thumb_w: f64,
    pub thumb_h: f64,
}

/// The filmstrip under a featured tile on a `w`×`h` stage: about a fifth of the height (90–160 px),
/// never more thumbnails than fit the width.
pub fn strip(w: f64, h: f64, gap: f64) -> Strip {
    let thumb_h = (h / 5.0).clamp(90.0, 160.0).min(h.max(0.0));
    let thumb_w = thumb_h * ASPECT;
    let fits = ((w + gap) / (thumb_w + gap)).floor().max(1.0) as u32;
    Strip {
        fits,
        thumb_w,
        thumb_h,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fits(g: Grid, n: u32, w: f64, h: f64, gap: f64) {
        assert!(g.cols * g.rows >= n, "{g:?} holds {n}");
        let used_w = g.tile_w * g.cols as f64 + gap * (g.cols - 1) as f64;
        let used_h = g.tile_h * g.rows as f64 + gap * (g.rows - 1) as f64;
        assert!(used_w <= w + 0.01 && used_h <= h + 0.01, "{g:?} in {w}×{h}");
    }

    #[test]
    fn tiles_fill_a_wide_stage() {
        // 1280×800 page, minus bars and padding: about 1248×640 of stage.
        let (w, h, gap) = (1248.0, 640.0, 8.0);
        let one = grid(1, w, h, gap);
        assert_eq!((one.cols, one.rows), (1, 1));
        assert!(
            (one.tile_h - 640.0).abs() < 0.5,
            "{one:?}: as tall as the stage"
        );
        let three = grid(3, w, h, gap);
        assert_eq!((three.cols, three.rows), (2, 2));
        fits(three, 3, w, h, gap);
        let six = grid(6, w, h, gap);
        assert_eq!((six.cols, six.rows), (3, 2));
        fits(six, 6, w, h, gap);
        assert!(six.tile_w > 390.0, "{six:?}");
    }

    #[test]
    fn a_side_panel_shrinks_the_tiles_but_keeps_them_in() {
        // With a 340 px panel beside the stage the grid is recomputed, not pushed out.
        let (w, h, gap) = (1248.0 - 352.0, 640.0, 8.0);
        for n in 1..=9 {
            fits(grid(n, w, h, gap), n, w, h, gap);
        }
        assert_eq!(grid(6, w, h, gap).cols, 2);
    }

    #[test]
    fn a_phone_in_portrait_stacks_tiles() {
        let (w, h, gap) = (374.0, 620.0, 6.0);
        let three = grid(3, w, h, gap);
        assert_eq!((three.cols, three.rows), (1, 3));
        fits(three, 3, w, h, gap);
        assert_eq!(page_size(6, w, h, gap), 6, "six people fit on one page");
        let six = grid(6, w, h, gap);
        assert_eq!((six.cols, six.rows), (2, 3));
        assert!(six.tile_w >= MIN_TILE_W);
        // Twelve still do (2×6); twenty do not: they are paged.
        assert_eq!(page_size(12, w, h, gap), 12);
        let k = page_size(20, w, h, gap);
        assert!(k < 20 && grid(k, w, h, gap).tile_w >= MIN_TILE_W, "{k}");
    }

    #[test]
    fn degenerate_areas_do_not_panic() {
        assert_eq!(grid(0, 0.0, 0.0, 8.0).tile_w, 0.0);
        assert_eq!(page_size(5, 10.0, 10.0, 8.0), 1);
        assert!(grid(4, -5.0, 100.0, 8.0).tile_w == 0.0);
        assert_eq!(strip(0.0, 0.0, 8.0).fits, 1);
    }

    #[test]
    fn the_filmstrip_holds_what_fits_across() {
        let s = strip(1248.0, 640.0, 8.0);
        assert!((s.thumb_h - 128.0).abs() < 0.01);
        assert_eq!(s.fits, 5);
        assert_eq!(strip(374.0, 600.0, 6.0).fits, 1);
    }
}
