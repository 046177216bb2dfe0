//! Writes a small synthetic benchmark and a contact sheet of its first images, to look at.
//!
//! `cargo run -p firempo-datasets --example synth_preview -- /tmp/synth-preview [n_train n_val n_test]`

use firempo_datasets::synth::{generate, SynthConfig};
use image::{DynamicImage, GrayImage};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "synth-preview".into());
    let out = std::path::Path::new(&out);
    let count = |i: usize, default: usize| -> Result<usize, Box<dyn std::error::Error>> {
        Ok(match std::env::args().nth(i) {
            Some(n) => n.parse()?,
            None => default,
        })
    };
    let config = SynthConfig {
        n_train: count(2, 16)?.max(16),
        n_val: count(3, 0)?,
        n_test: count(4, 0)?,
        ..Default::default()
    };
    let summary = generate(&config, out)?;
    println!("{summary:#?}");
    let size = config.image_size;
    let mut sheet = GrayImage::new(size * 8, size * 4);
    for i in 0..16u32 {
        let image = image::open(out.join(format!("images/train-{i:05}.png")))?.to_luma8();
        let mask = image::open(out.join(format!("masks/train-{i:05}.png")))?.to_luma8();
        let (x0, y0) = ((i % 4) * 2 * size, (i / 4) * size);
        image::imageops::replace(&mut sheet, &image, x0.into(), y0.into());
        image::imageops::replace(&mut sheet, &mask, (x0 + size).into(), y0.into());
    }
    DynamicImage::ImageLuma8(sheet).save(out.join("contact_sheet.png"))?;
    Ok(())
}
