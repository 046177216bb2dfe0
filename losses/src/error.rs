//! Errors of the loss library: invalid hyperparameters and inconsistent input shapes.

use thiserror::Error;

/// Why a loss could not be computed. Every variant names the offending field and the fix.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum LossError {
    /// A hyperparameter is outside its valid range (e.g. `beta <= 0`, `lambda > 1`).
    #[error("invalid {loss} config: `{field}` = {value} but it must be {requirement}")]
    InvalidConfig {
        loss: &'static str,
        field: &'static str,
        value: f64,
        requirement: &'static str,
    },
    /// Two inputs that must agree in shape do not.
    #[error("shape mismatch in `{field}`: expected {expected:?}, found {found:?}")]
    ShapeMismatch {
        field: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// The loss needs an answer variant (e.g. scored under the corrupted image) that the batch lacks.
    #[error("{loss} needs `{field}` in the batch: {hint}")]
    MissingInput {
        loss: &'static str,
        field: &'static str,
        hint: &'static str,
    },
}

/// Checks `value > 0` and finite.
pub(crate) fn require_positive(
    loss: &'static str,
    field: &'static str,
    value: f64,
) -> Result<(), LossError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(invalid(loss, field, value, "a finite number > 0"))
    }
}

/// Checks `value >= 0` and finite.
pub(crate) fn require_non_negative(
    loss: &'static str,
    field: &'static str,
    value: f64,
) -> Result<(), LossError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(invalid(loss, field, value, "a finite number >= 0"))
    }
}

/// Checks `0 <= value <= 1`.
pub(crate) fn require_unit_interval(
    loss: &'static str,
    field: &'static str,
    value: f64,
) -> Result<(), LossError> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(invalid(loss, field, value, "in [0, 1]"))
    }
}

/// Checks that `value` is finite (any sign).
pub(crate) fn require_finite(
    loss: &'static str,
    field: &'static str,
    value: f64,
) -> Result<(), LossError> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(invalid(loss, field, value, "a finite number"))
    }
}

fn invalid(
    loss: &'static str,
    field: &'static str,
    value: f64,
    requirement: &'static str,
) -> LossError {
    LossError::InvalidConfig {
        loss,
        field,
        value,
        requirement,
    }
}

/// Returns a [`LossError::ShapeMismatch`] unless `found == expected`.
pub(crate) fn require_shape(
    field: impl Into<String>,
    expected: &[usize],
    found: &[usize],
) -> Result<(), LossError> {
    if expected == found {
        Ok(())
    } else {
        Err(LossError::ShapeMismatch {
            field: field.into(),
            expected: expected.to_vec(),
            found: found.to_vec(),
        })
    }
}
