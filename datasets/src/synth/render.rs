//! Drawing of the synthetic images: a chest radiograph (frontal) or a chest CT slice (axial) made
//! of jittered ellipses, rib stripes, low-frequency texture and pixel noise, plus soft round
//! lesions inside one lung. Sides follow the radiological convention: the patient's left lung is
//! on the image's right.

use image::{GrayImage, Luma};
use serde::{Deserialize, Serialize};

use crate::mask::Mask;
use crate::rng::SeededRng;

/// Which kind of image to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Modality {
    /// Frontal chest X-ray: bright mediastinum and spine, dark lungs, rib stripes.
    Xray,
    /// Axial chest CT slice: body outline, dark lungs, bright vertebra and heart.
    Ct,
}

/// Patient side of a lesion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Patient's left (image right).
    Left,
    /// Patient's right (image left).
    Right,
}

/// Vertical third of the lung.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Zone {
    /// Top third.
    Upper,
    /// Middle third.
    Middle,
    /// Bottom third.
    Lower,
}

/// Size class of a lesion (radius range scales with the image size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SizeClass {
    /// Radius 1.5–2.2 px at 64 px.
    Small,
    /// Radius 2.4–3.1 px at 64 px.
    Medium,
    /// Radius 3.4–4.4 px at 64 px.
    Large,
}

impl Side {
    /// The word used in questions and answers.
    pub fn word(self) -> &'static str {
        match self {
            Side::Left => "left",
            Side::Right => "right",
        }
    }
}

impl Zone {
    /// All zones, top to bottom.
    pub const ALL: [Zone; 3] = [Zone::Upper, Zone::Middle, Zone::Lower];

    /// The word used in questions and answers.
    pub fn word(self) -> &'static str {
        match self {
            Zone::Upper => "upper",
            Zone::Middle => "middle",
            Zone::Lower => "lower",
        }
    }
}

impl SizeClass {
    /// All size classes, small to large.
    pub const ALL: [SizeClass; 3] = [SizeClass::Small, SizeClass::Medium, SizeClass::Large];

    /// The word used in questions and answers.
    pub fn word(self) -> &'static str {
        match self {
            SizeClass::Small => "small",
            SizeClass::Medium => "medium",
            SizeClass::Large => "large",
        }
    }

    /// Radius range in pixels at a 64-pixel image.
    fn radius_range(self) -> (f64, f64) {
        match self {
            SizeClass::Small => (1.5, 2.2),
            SizeClass::Medium => (2.4, 3.1),
            SizeClass::Large => (3.4, 4.4),
        }
    }
}

/// One drawn lesion, in pixel coordinates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lesion {
    /// Patient side.
    pub side: Side,
    /// Lung zone of the centre.
    pub zone: Zone,
    /// Size class.
    pub size: SizeClass,
    /// Centre x.
    pub x: f64,
    /// Centre y.
    pub y: f64,
    /// Radius in pixels.
    pub radius: f64,
    /// Peak brightness added over the lung, 0–255 scale.
    pub contrast: f64,
}

#[derive(Debug, Clone, Copy)]
struct Ellipse {
    cx: f64,
    cy: f64,
    rx: f64,
    ry: f64,
}

impl Ellipse {
    /// Normalised distance: < 1 inside.
    fn dist(&self, x: f64, y: f64) -> f64 {
        (((x - self.cx) / self.rx).powi(2) + ((y - self.cy) / self.ry).powi(2)).sqrt()
    }
}

/// Anatomy of one image, in unit coordinates (0–1).
struct Anatomy {
    body: Ellipse,
    lungs: [Ellipse; 2], // [patient right (image left), patient left (image right)]
    heart: Ellipse,
    spine: Ellipse,
    levels: [f64; 5], // background, body, lung, heart, spine
}

fn jitter(rng: &mut SeededRng, value: f64, amount: f64) -> f64 {
    value + rng.range_f64(-amount, amount)
}

fn anatomy(modality: Modality, rng: &mut SeededRng) -> Anatomy {
    let j = |rng: &mut SeededRng, e: Ellipse| Ellipse {
        cx: jitter(rng, e.cx, 0.015),
        cy: jitter(rng, e.cy, 0.015),
        rx: e.rx * jitter(rng, 1.0, 0.05),
        ry: e.ry * jitter(rng, 1.0, 0.05),
    };
    let e = |cx, cy, rx, ry| Ellipse { cx, cy, rx, ry };
    let (body, lungs, heart, spine) = match modality {
        Modality::Xray => (
            e(0.5, 0.56, 0.46, 0.52),
            [e(0.30, 0.47, 0.15, 0.31), e(0.70, 0.47, 0.14, 0.30)],
            e(0.56, 0.66, 0.13, 0.14),
            e(0.5, 0.5, 0.035, 0.6),
        ),
        Modality::Ct => (
            e(0.5, 0.52, 0.46, 0.34),
            [e(0.30, 0.48, 0.15, 0.24), e(0.70, 0.48, 0.14, 0.23)],
            e(0.54, 0.42, 0.10, 0.09),
            e(0.5, 0.78, 0.06, 0.06),
        ),
    };
    Anatomy {
        body: j(rng, body),
        lungs: [j(rng, lungs[0]), j(rng, lungs[1])],
        heart: j(rng, heart),
        spine: j(rng, spine),
        levels: [
            jitter(rng, 12.0, 6.0),
            jitter(rng, 95.0, 10.0),
            jitter(rng, 48.0, 8.0),
            jitter(rng, 125.0, 10.0),
            jitter(rng, 150.0, 10.0),
        ],
    }
}

fn lung_index(side: Side) -> usize {
    match side {
        Side::Right => 0,
        Side::Left => 1,
    }
}

/// What to draw: the anatomy is random, the lesions' side, zone and size are given.
#[derive(Debug, Clone)]
pub(crate) struct LesionPlan {
    pub side: Side,
    pub zone: Zone,
    pub size: SizeClass,
}

/// Draws one image and its lesion mask. Lesions after the first are drawn smaller than the
/// first (≤ 0.8 of its radius), so "the largest lesion" is always the first.
pub(crate) fn draw(
    size: u32,
    modality: Modality,
    plans: &[LesionPlan],
    contrast: [f32; 2],
    noise_sigma: f32,
    rng: &mut SeededRng,
) -> (GrayImage, Mask, Vec<Lesion>) {
    let anatomy = anatomy(modality, rng);
    let s = size as f64;
    let scale = s / 64.0;
    let mut lesions: Vec<Lesion> = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        let (lo, hi) = plan.size.radius_range();
        let mut radius = rng.range_f64(lo, hi) * scale;
        if let Some(first) = lesions.first() {
            radius = radius.min(first.radius * 0.8).max(1.2 * scale);
        }
        let lung = anatomy.lungs[lung_index(plan.side)];
        let zone_index = Zone::ALL.iter().position(|z| *z == plan.zone).unwrap() as f64;
        let top = lung.cy - lung.ry;
        let mut placed = None;
        for _ in 0..200 {
            let v = top + 2.0 * lung.ry * (zone_index + rng.range_f64(0.15, 0.85)) / 3.0;
            let u = rng.range_f64(lung.cx - lung.rx, lung.cx + lung.rx);
            let (x, y) = (u * s, v * s);
            // The centre lies well inside the lung and outside the heart; the zone is the centre's.
            let inside = lung.dist(u, v) < 0.75 && anatomy.heart.dist(u, v) > 1.1;
            let apart = lesions
                .iter()
                .all(|l| ((l.x - x).powi(2) + (l.y - y).powi(2)).sqrt() > l.radius + radius + 1.5);
            if inside && apart {
                placed = Some((x, y));
                break;
            }
        }
        // The first lesion falls back to the middle of its zone band on the lung's axis; an extra
        // lesion that finds no room is dropped.
        let (x, y) = match placed {
            Some(p) => p,
            None if i == 0 => (
                lung.cx * s,
                (top + 2.0 * lung.ry * (zone_index + 0.5) / 3.0) * s,
            ),
            None => continue,
        };
        lesions.push(Lesion {
            side: plan.side,
            zone: plan.zone,
            size: plan.size,
            x,
            y,
            radius,
            contrast: rng.range_f64(contrast[0] as f64, contrast[1] as f64),
        });
    }
    // Sort-free: the first lesion is the largest by construction. Re-derive size classes of the
    // extra lesions from their actual radii.
    for lesion in lesions.iter_mut().skip(1) {
        lesion.size = class_of(lesion.radius / scale);
    }

    let rib_phase = rng.range_f64(0.0, std::f64::consts::TAU);
    let rib_freq = rng.range_f64(7.5, 9.5);
    let bumps: Vec<(f64, f64, f64, f64)> = (0..4)
        .map(|_| {
            (
                rng.range_f64(0.1, 0.9),
                rng.range_f64(0.1, 0.9),
                rng.range_f64(0.08, 0.2),
                rng.range_f64(-8.0, 8.0),
            )
        })
        .collect();
    let [bg, body, lung_level, heart, spine] = anatomy.levels;
    let mut image = GrayImage::new(size, size);
    let mut mask = Mask::empty(size, size);
    for py in 0..size {
        for px in 0..size {
            let (u, v) = ((px as f64 + 0.5) / s, (py as f64 + 0.5) / s);
            let mut value = if anatomy.body.dist(u, v) < 1.0 {
                body
            } else {
                bg
            };
            let in_lung = anatomy.lungs.iter().any(|l| l.dist(u, v) < 1.0);
            if in_lung {
                value = lung_level;
                if modality == Modality::Xray {
                    let stripe = (std::f64::consts::TAU * rib_freq * (v + 0.2 * (u - 0.5).powi(2))
                        + rib_phase)
                        .cos()
                        .max(0.0);
                    value += 14.0 * stripe.powi(4);
                }
            }
            if anatomy.heart.dist(u, v) < 1.0 {
                value = heart;
            }
            if anatomy.spine.dist(u, v) < 1.0 {
                value = spine;
            }
            for &(bx, by, br, amp) in &bumps {
                value += amp * (-((u - bx).powi(2) + (v - by).powi(2)) / (2.0 * br * br)).exp();
            }
            let (x, y) = (px as f64 + 0.5, py as f64 + 0.5);
            for lesion in &lesions {
                let d = ((x - lesion.x).powi(2) + (y - lesion.y).powi(2)).sqrt();
                if d <= lesion.radius {
                    mask.set(px, py, true);
                }
                let sd = 0.6 * lesion.radius;
                value += lesion.contrast * (-0.5 * (d / sd).powi(2)).exp();
            }
            value += noise_sigma as f64 * rng.normal();
            image.put_pixel(px, py, Luma([value.round().clamp(0.0, 255.0) as u8]));
        }
    }
    (image, mask, lesions)
}

fn class_of(radius_at_64: f64) -> SizeClass {
    if radius_at_64 < 2.3 {
        SizeClass::Small
    } else if radius_at_64 < 3.25 {
        SizeClass::Medium
    } else {
        SizeClass::Large
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same image drawn with and without lesion contrast (same random stream) isolates the
    /// lesion signal, to compare with the anatomy + noise around it.
    #[test]
    fn lesions_are_visible_but_subtle() {
        let mut ratios = Vec::new();
        for seed in 0..40u64 {
            let plans = [LesionPlan {
                side: if seed % 2 == 0 {
                    Side::Left
                } else {
                    Side::Right
                },
                zone: Zone::ALL[seed as usize % 3],
                size: SizeClass::ALL[(seed as usize / 3) % 3],
            }];
            let defaults = super::super::SynthConfig::default();
            let (contrast, sigma) = (defaults.contrast, defaults.noise_sigma);
            let mut rng = SeededRng::new(seed);
            let (with, mask, lesions) = draw(64, Modality::Xray, &plans, contrast, sigma, &mut rng);
            let mut rng = SeededRng::new(seed);
            let (without, mask0, _) = draw(64, Modality::Xray, &plans, [0.0; 2], sigma, &mut rng);
            assert_eq!(mask, mask0);
            assert_eq!(lesions.len(), 1);
            let (mut signal, mut n) = (0.0, 0.0);
            let mut background = Vec::new();
            let l = &lesions[0];
            for y in 0..64 {
                for x in 0..64 {
                    let a = with.get_pixel(x, y)[0] as f64;
                    let b = without.get_pixel(x, y)[0] as f64;
                    if mask.contains(x, y) {
                        signal += a - b;
                        n += 1.0;
                    } else {
                        assert!(
                            (a - b).abs() <= l.contrast * 0.26 + 1.0,
                            "signal leaks far out"
                        );
                    }
                    let d =
                        ((x as f64 + 0.5 - l.x).powi(2) + (y as f64 + 0.5 - l.y).powi(2)).sqrt();
                    if d > l.radius + 1.0 && d < l.radius + 6.0 {
                        background.push(b);
                    }
                }
            }
            // Lung pixels only: drop ring pixels of other tissue (body wall, heart), which are
            // 40+ levels brighter than lung and which a model learns as structure, not noise.
            background.sort_by(f64::total_cmp);
            let median_bg = background[background.len() / 2];
            background.retain(|v| (v - median_bg).abs() < 25.0);
            let mean_signal = signal / n;
            let mean_bg = background.iter().sum::<f64>() / background.len() as f64;
            let std_bg = (background
                .iter()
                .map(|v| (v - mean_bg).powi(2))
                .sum::<f64>()
                / background.len() as f64)
                .sqrt();
            assert!(
                mean_signal > 0.4 * l.contrast,
                "{mean_signal} vs {}",
                l.contrast
            );
            ratios.push(mean_signal / std_bg);
        }
        ratios.sort_by(f64::total_cmp);
        let median = ratios[ratios.len() / 2];
        eprintln!(
            "signal/background-std: min {:.2} median {median:.2}",
            ratios[0]
        );
        // Visible (signal above the local variation) but subtle (not a bright spot).
        assert!(
            (1.5..8.0).contains(&median),
            "median signal/background-std {median}"
        );
        assert!(ratios[0] > 1.0, "weakest lesion {}", ratios[0]);
    }
}
