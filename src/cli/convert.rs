//! `firempo convert`: arguments and report of the public-dataset conversion.

use std::path::PathBuf;

use clap::Args;
use firempo_datasets::BadRecordPolicy;

use crate::stages::convert::{ConvertStage, SourceFormat};

/// `firempo convert`: SLAKE, VQA-RAD or IU-Xray as firempo records.
#[derive(Debug, Clone, Args)]
pub struct ConvertArgs {
    /// Source format.
    #[arg(value_enum)]
    pub format: SourceFormat,
    /// SLAKE: its root folder (train.json, validation.json, test.json, imgs/); VQA-RAD: the
    /// question file `VQA_RAD Dataset Public.json`; IU-Xray: R2Gen's `annotation.json`.
    pub input: PathBuf,
    /// Image folder for VQA-RAD (default: `VQA_RAD Image Folder` beside the JSON) or IU-Xray
    /// (default: `images` beside annotation.json).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Output folder for train.jsonl / val.jsonl / test.jsonl.
    #[arg(long, default_value = "runs/records")]
    pub out: PathBuf,
    /// SLAKE question language (`q_lang`), or `all`.
    #[arg(long, default_value = "en")]
    pub language: String,
    /// Stop at the first bad record instead of skipping and counting it.
    #[arg(long)]
    pub strict: bool,
}

/// Runs `firempo convert`.
pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    let stage = ConvertStage {
        format: args.format,
        input: args.input,
        images: args.images,
        out: args.out,
        language: (args.language != "all").then_some(args.language),
        policy: if args.strict {
            BadRecordPolicy::Stop
        } else {
            BadRecordPolicy::Skip
        },
    };
    for split in stage.run()? {
        match &split.path {
            Some(path) => print!(
                "{:<5} {:>6} records -> {}",
                split.split.name(),
                split.records,
                path.display()
            ),
            None => print!("{:<5}      0 records", split.split.name()),
        }
        match &split.first_problem {
            Some(problem) => println!(" ({} skipped; first: {problem})", split.skipped),
            None => println!(),
        }
    }
    Ok(())
}
