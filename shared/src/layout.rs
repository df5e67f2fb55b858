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
    let mut thumb_h = (h / 5.0).clamp(90.0, 160.0).min(h.max(0.0));
    // A narrow screen (a phone) fits two smaller thumbnails rather than one: someone besides the
    // featured tile stays in view.
    let two = (w - gap) / 2.0 / ASPECT;
    if thumb_h * ASPECT > (w - gap) / 2.0 && two >= 90.0 {
        thumb_h = two;
    }
    let thumb_w = thumb_h * ASPECT;
    // (The small margin keeps rounding from losing a thumbnail that fits exactly.)
    let fits = ((w + gap) / (thumb_w + gap) + 1e-6).floor().max(1.0) as u32;
    Strip {
        fits,
        thumb_w,
        thumb_h,
    }
}

/// A tile's place on the stage (CSS pixels from the stage's top left).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

/// Height kept for the page buttons when the grid has more than one page.
pub const PAGER_H: f64 = 44.0;

/// Where every tile goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Arrangement {
    /// One per tile, in the order given: `None` for a tile not shown (another page, or beyond
    /// what the filmstrip holds).
    pub rects: Vec<Option<Rect>>,
    /// Grid pages (1 when everything fits).
    pub pages: u32,
    /// The page shown (clamped).
    pub page: u32,
    /// Tiles the filmstrip could not show.
    pub hidden_in_strip: u32,
    /// Where a "+N" marker goes, when the filmstrip could not show everyone.
    pub more: Option<Rect>,
}

/// Places `n` tiles on a `w`×`h` stage: tile `featured` big with the others in a filmstrip under
/// it, or (no featured tile) all of them in the biggest grid that fits, page `page` of as many as
/// it takes to keep tiles at least [`MIN_TILE_W`] wide.
pub fn arrange(
    n: usize,
    featured: Option<usize>,
    w: f64,
    h: f64,
    gap: f64,
    page: u32,
) -> Arrangement {
    let mut rects = vec![None; n];
    let (w, h) = (w.max(0.0), h.max(0.0));
    if n == 0 {
        return Arrangement {
            rects,
            pages: 1,
            page: 0,
            hidden_in_strip: 0,
            more: None,
        };
    }
    if let Some(f) = featured.filter(|&f| f < n) {
        let others: Vec<usize> = (0..n).filter(|&i| i != f).collect();
        if others.is_empty() {
            rects[f] = Some(Rect {
                x: 0.0,
                y: 0.0,
                w,
                h,
            });
            return Arrangement {
                rects,
                pages: 1,
                page: 0,
                hidden_in_strip: 0,
                more: None,
            };
        }
        let s = strip(w, h, gap);
        let big_h = (h - s.thumb_h - gap).max(0.0);
        rects[f] = Some(Rect {
            x: 0.0,
            y: 0.0,
            w,
            h: big_h,
        });
        let overflow = others.len() as u32 > s.fits;
        let shown = if overflow {
            s.fits - 1
        } else {
            others.len() as u32
        } as usize;
        let slots = shown + usize::from(overflow);
        let row_w = slots as f64 * s.thumb_w + gap * slots.saturating_sub(1) as f64;
        let x0 = ((w - row_w) / 2.0).max(0.0);
        let y = h - s.thumb_h;
        let slot = |i: usize| Rect {
            x: x0 + i as f64 * (s.thumb_w + gap),
            y,
            w: s.thumb_w.min(w),
            h: s.thumb_h,
        };
        for (i, &t) in others.iter().take(shown).enumerate() {
            rects[t] = Some(slot(i));
        }
        let hidden = (others.len() - shown) as u32;
        return Arrangement {
            rects,
            pages: 1,
            page: 0,
            hidden_in_strip: hidden,
            more: overflow.then(|| slot(shown)),
        };
    }
    // Paged, the grid also leaves room for the page buttons: size the pages for that height.
    let mut per_page = page_size(n as u32, w, h, gap) as usize;
    if per_page < n {
        per_page = page_size(n as u32, w, (h - PAGER_H).max(0.0), gap) as usize;
    }
    let pages = n.div_ceil(per_page) as u32;
    let page = page.min(pages - 1);
    let area_h = if pages > 1 { (h - PAGER_H).max(0.0) } else { h };
    let first = page as usize * per_page;
    let on_page: Vec<usize> = (first..n.min(first + per_page)).collect();
    let g = grid(on_page.len() as u32, w, area_h, gap);
    let used_h = g.tile_h * g.rows as f64 + gap * (g.rows - 1) as f64;
    let y0 = ((area_h - used_h) / 2.0).max(0.0);
    for (i, &t) in on_page.iter().enumerate() {
        let (row, col) = (i as u32 / g.cols, i as u32 % g.cols);
        // The last row may be short: centre it.
        let in_row = (on_page.len() as u32 - row * g.cols).min(g.cols);
        let row_w = g.tile_w * in_row as f64 + gap * (in_row - 1) as f64;
        let x0 = ((w - row_w) / 2.0).max(0.0);
        rects[t] = Some(Rect {
            x: x0 + col as f64 * (g.tile_w + gap),
            y: y0 + row as f64 * (g.tile_h + gap),
            w: g.tile_w,
            h: g.tile_h,
        });
    }
    Arrangement {
        rects,
        pages,
        page,
        hidden_in_strip: 0,
        more: None,
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
        assert_eq!(
            strip(374.0, 600.0, 6.0).fits,
            2,
            "a phone shows two thumbnails"
        );
        assert_eq!(strip(300.0, 600.0, 6.0).fits, 1, "too narrow for two");
    }

    fn inside(a: &Arrangement, w: f64, h: f64) {
        for r in a.rects.iter().flatten().chain(a.more.iter()) {
            assert!(
                r.x >= -0.01 && r.y >= -0.01 && r.x + r.w <= w + 0.01 && r.y + r.h <= h + 0.01,
                "{r:?} outside {w}×{h}"
            );
        }
        // No two shown tiles overlap.
        let shown: Vec<&Rect> = a.rects.iter().flatten().collect();
        for (i, p) in shown.iter().enumerate() {
            for q in &shown[i + 1..] {
                let apart = p.x + p.w <= q.x + 0.01
                    || q.x + q.w <= p.x + 0.01
                    || p.y + p.h <= q.y + 0.01
                    || q.y + q.h <= p.y + 0.01;
                assert!(apart, "{p:?} overlaps {q:?}");
            }
        }
    }

    #[test]
    fn every_arrangement_keeps_tiles_on_the_stage_and_apart() {
        for (w, h) in [
            (1248.0, 640.0),
            (896.0, 640.0),
            (374.0, 600.0),
            (374.0, 300.0),
        ] {
            for n in 1..=14 {
                for featured in [None, Some(0), Some(n - 1)] {
                    for page in 0..3 {
                        let a = arrange(n, featured, w, h, 8.0, page);
                        inside(&a, w, h);
                        if featured.is_none() {
                            let shown = a.rects.iter().flatten().count();
                            assert!(shown >= 1 && a.page < a.pages);
                            if a.pages > 1 {
                                for r in a.rects.iter().flatten() {
                                    assert!(
                                        r.w >= MIN_TILE_W - 0.01 && r.y + r.h <= h - PAGER_H + 0.01,
                                        "{r:?}"
                                    );
                                }
                            }
                        } else {
                            let shown = a.rects.iter().flatten().count() as u32;
                            assert_eq!(shown + a.hidden_in_strip, n as u32);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn grid_pages_cover_everyone_once() {
        let (w, h) = (374.0, 600.0);
        let n = 20;
        let first = arrange(n, None, w, h, 6.0, 0);
        assert!(first.pages > 1);
        let mut seen = vec![0; n];
        for p in 0..first.pages {
            for (i, r) in arrange(n, None, w, h, 6.0, p).rects.iter().enumerate() {
                if r.is_some() {
                    seen[i] += 1;
                }
            }
        }
        assert!(seen.iter().all(|&c| c == 1), "{seen:?}");
    }

    #[test]
    fn a_featured_tile_is_big_and_the_others_go_in_the_strip() {
        let a = arrange(3, Some(1), 1248.0, 640.0, 8.0, 0);
        let big = a.rects[1].unwrap();
        assert_eq!((big.w, big.h), (1248.0, 640.0 - 128.0 - 8.0));
        assert!(a.rects[0].unwrap().y > big.h && a.rects[2].unwrap().y > big.h);
        // A phone's strip holds two slots: one thumbnail and "+2".
        let a = arrange(4, Some(0), 374.0, 600.0, 6.0, 0);
        assert_eq!(a.rects.iter().flatten().count(), 2);
        assert_eq!(a.hidden_in_strip, 2);
        assert!(a.more.is_some());
    }
}
