//! What a loader does with a bad record: skip it and count it, or stop the run. Either way the
//! caller learns how many records were accepted and which were not.

use crate::error::DatasetError;

/// What to do when a record cannot be read or converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadRecordPolicy {
    /// Skip the record, keep its error in the report, go on.
    #[default]
    Skip,
    /// Stop at the first bad record with [`DatasetError::Stopped`].
    Stop,
}

/// Records a loader accepted, with the count and errors of those it skipped.
#[derive(Debug)]
pub struct Loaded<T> {
    /// Accepted items, in file order.
    pub items: Vec<T>,
    /// Number of skipped (bad) records.
    pub skipped: usize,
    /// The error of every skipped record, in file order.
    pub problems: Vec<DatasetError>,
}

impl<T> Loaded<T> {
    /// Maps the accepted items, keeping the report.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Loaded<U> {
        Loaded {
            items: self.items.into_iter().map(f).collect(),
            skipped: self.skipped,
            problems: self.problems,
        }
    }
}

/// Accumulates items under a [`BadRecordPolicy`].
#[derive(Debug)]
pub(crate) struct Intake<T> {
    policy: BadRecordPolicy,
    loaded: Loaded<T>,
}

impl<T> Intake<T> {
    pub(crate) fn new(policy: BadRecordPolicy) -> Self {
        Self {
            policy,
            loaded: Loaded {
                items: Vec::new(),
                skipped: 0,
                problems: Vec::new(),
            },
        }
    }

    /// Takes one result; errors under `Stop` end the run with the accepted count.
    pub(crate) fn take(&mut self, item: Result<T, DatasetError>) -> Result<(), DatasetError> {
        match item {
            Ok(item) => {
                self.loaded.items.push(item);
                Ok(())
            }
            Err(err) => match self.policy {
                BadRecordPolicy::Skip => {
                    tracing::warn!("skipping bad record: {err}");
                    self.loaded.skipped += 1;
                    self.loaded.problems.push(err);
                    Ok(())
                }
                BadRecordPolicy::Stop => Err(DatasetError::Stopped {
                    accepted: self.loaded.items.len(),
                    source: Box::new(err),
                }),
            },
        }
    }

    pub(crate) fn finish(self) -> Loaded<T> {
        self.loaded
    }
}

/// Options shared by the public-format loaders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// What to do with a bad record.
    pub policy: BadRecordPolicy,
    /// Whether a record whose image file is missing is bad (default `true`).
    pub check_images: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            policy: BadRecordPolicy::Skip,
            check_images: true,
        }
    }
}
