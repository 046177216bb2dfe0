//! Evaluation metrics, one concept per file: VQA accuracy and recall ([`vqa`]), BLEU ([`bleu`]),
//! ROUGE-L ([`rouge`]), lesion findings ([`findings`]) and visual sensitivity ([`sensitivity`]).

pub mod bleu;
pub mod findings;
pub mod rouge;
pub mod sensitivity;
pub mod vqa;

pub use bleu::*;
pub use findings::*;
pub use rouge::*;
pub use sensitivity::*;
pub use vqa::*;
