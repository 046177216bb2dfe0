//! Lesion-targeted corruption: noise only inside the mask (outside bit-identical), the paper's σ,
//! seeded determinism, the recorded fallbacks, the ablations, and the written files.

mod common;

use common::{gray_image, rgb_image, write_jpeg, TempDir};
use firempo_datasets::{
    corrupt, load_image, write_corruption, CorruptionConfig, CorruptionMode, CorruptionPath, Mask,
};
use image::{DynamicImage, GenericImageView, GrayImage, Luma};

fn lesion_mask(w: u32, h: u32) -> Mask {
    Mask::from_fn(w, h, |x, y| (8..24).contains(&x) && (10..20).contains(&y))
}

#[test]
fn outside_the_mask_is_bit_identical_and_inside_is_noised() {
    for image in [gray_image(32, 32), rgb_image(32, 32)] {
        let mask = lesion_mask(32, 32);
        let out = corrupt(&image, Some(&mask), &CorruptionConfig::default(), "rec-1").unwrap();
        assert_eq!(out.path, CorruptionPath::LesionMask);
        assert_eq!(out.image.color(), image.color());
        let mut changed = 0;
        for (x, y, p) in image.pixels() {
            let q = out.image.get_pixel(x, y);
            if mask.contains(x, y) {
                changed += usize::from(p != q);
            } else {
                assert_eq!(p, q, "pixel ({x},{y}) outside the mask changed");
            }
        }
        // σ = 45: almost every inside pixel moves (P(|round(45 z)| = 0) ≈ 1%).
        assert!(
            changed as f64 > 0.95 * mask.area() as f64,
            "{changed} of {}",
            mask.area()
        );
    }
}

#[test]
fn noise_has_sigma_45_on_a_mid_grey_image() {
    let image = DynamicImage::ImageLuma8(GrayImage::from_pixel(100, 100, Luma([128])));
    let mask = Mask::from_fn(100, 100, |_, _| true);
    let out = corrupt(&image, Some(&mask), &CorruptionConfig::default(), "sigma").unwrap();
    let diffs: Vec<f64> = out
        .image
        .to_luma8()
        .pixels()
        .map(|p| p[0] as f64 - 128.0)
        .collect();
    let n = diffs.len() as f64;
    let mean = diffs.iter().sum::<f64>() / n;
    let std = (diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n).sqrt();
    // Clipping at 0/255 trims the tails a little (128 ± 2.8σ), so the std sits just under 45.
    assert!(mean.abs() < 1.5, "mean {mean}");
    assert!((42.0..45.5).contains(&std), "std {std}");
}

#[test]
fn same_seed_and_key_reproduce_other_keys_differ() {
    let image = rgb_image(24, 24);
    let mask = lesion_mask(24, 24);
    let config = CorruptionConfig {
        seed: 42,
        ..Default::default()
    };
    let a = corrupt(&image, Some(&mask), &config, "rec-7").unwrap();
    let b = corrupt(&image, Some(&mask), &config, "rec-7").unwrap();
    let c = corrupt(&image, Some(&mask), &config, "rec-8").unwrap();
    let other_seed = CorruptionConfig { seed: 43, ..config };
    let d = corrupt(&image, Some(&mask), &other_seed, "rec-7").unwrap();
    assert_eq!(a.image, b.image);
    assert_ne!(a.image, c.image);
    assert_ne!(a.image, d.image);
}

#[test]
fn fallbacks_are_recorded_with_their_sigma() {
    let image = DynamicImage::ImageLuma8(GrayImage::from_pixel(64, 64, Luma([128])));
    let config = CorruptionConfig::default();
    let spread = |img: &DynamicImage| {
        let v: Vec<f64> = img
            .to_luma8()
            .pixels()
            .map(|p| p[0] as f64 - 128.0)
            .collect();
        (v.iter().map(|d| d * d).sum::<f64>() / v.len() as f64).sqrt()
    };
    let whole = corrupt(&image, None, &config, "k").unwrap();
    assert_eq!(whole.path, CorruptionPath::WholeImageFallback);
    let s = spread(&whole.image);
    assert!((11.0..13.0).contains(&s), "no-concept σ-12 spread {s}");
    let wide = CorruptionConfig {
        no_concept_sigma: 45.0,
        ..CorruptionConfig::default()
    };
    let s = spread(&corrupt(&image, None, &wide, "k").unwrap().image);
    assert!(
        (40.0..46.0).contains(&s),
        "no-concept σ set to 45: spread {s}"
    );

    let empty = Mask::empty(64, 64);
    let global = corrupt(&image, Some(&empty), &config, "k").unwrap();
    assert_eq!(global.path, CorruptionPath::GlobalSigma12Fallback);
    let s = spread(&global.image);
    assert!((11.0..13.0).contains(&s), "σ-12 fallback spread {s}");
}

#[test]
fn ablation_modes() {
    let image = gray_image(32, 32);
    let mask = lesion_mask(32, 32);
    let run = |mode| {
        let config = CorruptionConfig {
            mode,
            ..Default::default()
        };
        corrupt(&image, Some(&mask), &config, "abl").unwrap()
    };
    let noise = run(CorruptionMode::ImageNoise);
    assert_eq!(noise.path, CorruptionPath::AblationImageNoise);
    let outside_changed = image
        .pixels()
        .filter(|(x, y, p)| !mask.contains(*x, *y) && noise.image.get_pixel(*x, *y) != *p)
        .count();
    assert!(
        outside_changed > 500,
        "image-level noise reaches outside the mask"
    );

    let black = run(CorruptionMode::BlackOut);
    assert_eq!(black.path, CorruptionPath::AblationBlackOut);
    for (x, y, p) in image.pixels() {
        let q = black.image.get_pixel(x, y);
        if mask.contains(x, y) {
            assert_eq!(q.0[0], 0);
        } else {
            assert_eq!(p, q);
        }
    }

    let crop = run(CorruptionMode::Crop);
    assert_eq!(crop.path, CorruptionPath::AblationCrop);
    assert_eq!(crop.image.dimensions(), (32, 32));
    assert_ne!(crop.image, image);

    let bad = CorruptionConfig {
        crop_keep: 0.0,
        ..Default::default()
    };
    let err = corrupt(&image, None, &bad, "x").unwrap_err();
    assert!(err.to_string().contains("crop_keep"), "{err}");
}

#[test]
fn writes_corrupted_png_and_side_by_side_preview() {
    let dir = TempDir::new("corrupt");
    let source = dir.path().join("in.jpg");
    write_jpeg(&rgb_image(20, 10), &source);
    let mask = Mask::from_fn(20, 10, |x, _| x < 5);
    let corrupted = dir.path().join("out/corrupted.png");
    let preview = dir.path().join("out/preview.png");
    let path = write_corruption(
        &source,
        Some(&mask),
        &CorruptionConfig::default(),
        "w",
        &corrupted,
        Some(&preview),
    )
    .unwrap();
    assert_eq!(path, CorruptionPath::LesionMask);
    let original = load_image(&source).unwrap();
    let written = load_image(&corrupted).unwrap();
    assert_eq!(written.dimensions(), (20, 10));
    for (x, y, p) in original.pixels() {
        if !mask.contains(x, y) {
            assert_eq!(
                written.get_pixel(x, y),
                p,
                "PNG output keeps ({x},{y}) bit-identical"
            );
        }
    }
    let side = load_image(&preview).unwrap().to_rgb8();
    assert_eq!(side.dimensions(), (60, 10));
    // Left panel = original, right panel = corrupted, middle = red-tinted inside the mask.
    assert_eq!(side.get_pixel(7, 3).0, original.to_rgb8().get_pixel(7, 3).0);
    assert_eq!(side.get_pixel(47, 3).0, written.to_rgb8().get_pixel(7, 3).0);
    assert!(side.get_pixel(21, 3).0[0] >= 128);

    let missing = write_corruption(
        &dir.path().join("nope.png"),
        None,
        &CorruptionConfig::default(),
        "w",
        &corrupted,
        None,
    )
    .unwrap_err();
    assert!(missing.to_string().contains("nope.png"), "{missing}");
}

#[test]
fn corrupt_records_writes_listing_and_counts_bad_records() {
    use firempo_datasets::synth::{self, SynthConfig};
    use firempo_datasets::{
        corrupt_records, read_jsonl, AnswerType, BadRecordPolicy, CorruptedRecord, Record,
    };
    let data = TempDir::new("corrupt-data");
    let out = TempDir::new("corrupt-out");
    let config = SynthConfig {
        n_train: 4,
        n_val: 0,
        n_test: 0,
        ..Default::default()
    };
    synth::generate(&config, data.path()).unwrap();
    let mut records = read_jsonl::<Record>(&data.path().join("train.jsonl"), BadRecordPolicy::Stop)
        .unwrap()
        .items;
    let mut broken = records[0].clone();
    broken.id = "broken".into();
    broken.image = "images/none.png".into();
    records.push(broken);
    let done = corrupt_records(
        &records,
        data.path(),
        &CorruptionConfig::default(),
        out.path(),
        true,
        BadRecordPolicy::Skip,
    )
    .unwrap();
    assert_eq!(done.skipped, 1);
    assert!(done.problems[0].to_string().contains("none.png"));
    assert_eq!(done.items.len(), records.len() - 1);
    for item in &done.items {
        let record = records.iter().find(|r| r.id == item.record_id).unwrap();
        let lesions = !record.meta["lesions"].as_array().unwrap().is_empty();
        let expected = match (record.answer_type, lesions) {
            (AnswerType::Report, _) => CorruptionPath::WholeImageFallback,
            (_, true) => CorruptionPath::LesionMask,
            (_, false) => CorruptionPath::GlobalSigma12Fallback,
        };
        assert_eq!(item.corruption, expected, "{}", item.record_id);
        assert!(item.corrupted_image.is_file());
        assert!(item.preview.as_ref().unwrap().is_file());
    }
    let listed =
        read_jsonl::<CorruptedRecord>(&out.path().join("corruptions.jsonl"), BadRecordPolicy::Stop)
            .unwrap()
            .items;
    assert_eq!(listed, done.items);
}
