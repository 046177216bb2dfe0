//! Every image a run will read is decoded before step 1, so a bad file stops the run at once,
//! naming the example that uses it, instead of killing training at the step that first reaches it
//! (and every `--resume` at that same step).

use std::collections::HashSet;
use std::path::Path;

use firempo_datasets::load_image;

/// At most this many bad images are listed in the error (the count covers all).
const LISTED: usize = 5;

/// Decodes each `(example, image path)` once (the loader's size limits apply); one error listing
/// the bad ones, each with the example that uses it (its id, and line where known), when any
/// fails. `source` names the file the examples came from.
pub fn check_images<'a>(
    source: &Path,
    images: impl IntoIterator<Item = (String, &'a Path)>,
) -> anyhow::Result<()> {
    let mut seen = HashSet::new();
    let mut bad = Vec::new();
    let mut checked = 0usize;
    for (id, path) in images {
        if !seen.insert(path) {
            continue;
        }
        checked += 1;
        if let Err(e) = load_image(path) {
            bad.push(format!("{id}: {e}"));
        }
    }
    anyhow::ensure!(
        bad.is_empty(),
        "{} of the {checked} images that {} uses cannot be read; fix or remove these examples \
         before training:{}",
        bad.len(),
        source.display(),
        list_some(&bad)
    );
    Ok(())
}

/// The first few problems, one per indented line, and a count of the rest.
pub fn list_some(problems: &[String]) -> String {
    let mut text: String = problems
        .iter()
        .take(LISTED)
        .map(|p| format!("\n  {p}"))
        .collect();
    if problems.len() > LISTED {
        text.push_str(&format!("\n  … and {} more", problems.len() - LISTED));
    }
    text
}
