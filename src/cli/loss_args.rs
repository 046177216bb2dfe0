//! Loss selection shared by every command that optimizes a preference loss.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use firempo_losses::{DpoConfig, FiReMpoConfig, MdpoConfig, PreferenceLoss, RrpoConfig};

/// A preference loss method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// Sequence-level DPO (sigmoid).
    Dpo,
    /// Phrase-level RRPO with token-wise forward KL.
    Rrpo,
    /// DPO + image-conditional + anchor terms.
    Mdpo,
    /// FiRe-MPO: phrase rank term, reversed visual term, bidirectional KL.
    FireMpo,
}

/// Loss method and hyperparameters; flags override the config file, which overrides defaults.
#[derive(Debug, Clone, Args)]
pub struct LossArgs {
    /// Loss method.
    #[arg(long, value_enum, default_value = "fire-mpo")]
    pub method: Method,
    /// JSON file with the loss hyperparameters, e.g. {"method": "fire-mpo", "gamma": 0.2}.
    #[arg(long, value_name = "FILE")]
    pub loss_config: Option<PathBuf>,
    /// Reward inverse temperature β (> 0). Default 0.1.
    #[arg(long)]
    pub beta: Option<f64>,
    /// FiRe-MPO: weight γ (>= 0) of the reversed visual term. Default 0.1.
    #[arg(long)]
    pub gamma: Option<f64>,
    /// FiRe-MPO: mix λ in [0, 1] of forward vs reverse KL. Default 0.5.
    #[arg(long)]
    pub lambda: Option<f64>,
    /// RRPO / FiRe-MPO: weight α (>= 0) of the token-wise KL. Default 0.01.
    #[arg(long)]
    pub alpha: Option<f64>,
    /// mDPO: anchor threshold δ. Default 0.
    #[arg(long)]
    pub anchor_delta: Option<f64>,
}

impl LossArgs {
    /// Builds the validated loss.
    pub fn to_loss(&self) -> anyhow::Result<PreferenceLoss> {
        let mut loss = match &self.loss_config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading loss config {}", path.display()))?;
                serde_json::from_str(&text).with_context(|| {
                    format!(
                        "parsing loss config {} (expected e.g. {{\"method\": \"fire-mpo\", \"beta\": 0.1}})",
                        path.display()
                    )
                })?
            }
            None => self.default_loss(),
        };
        if self.loss_config.is_some() && self.method_name() != loss.name() {
            anyhow::bail!(
                "--method {} disagrees with the loss config's method `{}`; drop --method or fix the file",
                self.method_name(),
                loss.name()
            );
        }
        self.apply_overrides(&mut loss)?;
        loss.validate()?;
        Ok(loss)
    }

    fn method_name(&self) -> &'static str {
        self.default_loss().name()
    }

    fn default_loss(&self) -> PreferenceLoss {
        match self.method {
            Method::Dpo => PreferenceLoss::Dpo(DpoConfig::default()),
            Method::Rrpo => PreferenceLoss::Rrpo(RrpoConfig::default()),
            Method::Mdpo => PreferenceLoss::Mdpo(MdpoConfig::default()),
            Method::FireMpo => PreferenceLoss::FireMpo(FiReMpoConfig::default()),
        }
    }

    fn apply_overrides(&self, loss: &mut PreferenceLoss) -> anyhow::Result<()> {
        let method = loss.name();
        let unused = |flag: &str, given: bool| -> anyhow::Result<()> {
            anyhow::ensure!(!given, "--{flag} does not apply to --method {method}");
            Ok(())
        };
        match loss {
            PreferenceLoss::Dpo(c) => {
                set(&mut c.beta, self.beta);
                unused("gamma", self.gamma.is_some())?;
                unused("lambda", self.lambda.is_some())?;
                unused("alpha", self.alpha.is_some())?;
                unused("anchor-delta", self.anchor_delta.is_some())?;
            }
            PreferenceLoss::Rrpo(c) => {
                set(&mut c.beta, self.beta);
                set(&mut c.alpha, self.alpha);
                unused("gamma", self.gamma.is_some())?;
                unused("lambda", self.lambda.is_some())?;
                unused("anchor-delta", self.anchor_delta.is_some())?;
            }
            PreferenceLoss::Mdpo(c) => {
                set(&mut c.beta, self.beta);
                set(&mut c.anchor_delta, self.anchor_delta);
                unused("gamma", self.gamma.is_some())?;
                unused("lambda", self.lambda.is_some())?;
                unused("alpha", self.alpha.is_some())?;
            }
            PreferenceLoss::FireMpo(c) => {
                set(&mut c.beta, self.beta);
                set(&mut c.gamma, self.gamma);
                set(&mut c.lambda, self.lambda);
                set(&mut c.alpha, self.alpha);
                unused("anchor-delta", self.anchor_delta.is_some())?;
            }
        }
        Ok(())
    }
}

fn set(field: &mut f64, value: Option<f64>) {
    if let Some(value) = value {
        *field = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        loss: LossArgs,
    }

    fn parse(args: &[&str]) -> anyhow::Result<PreferenceLoss> {
        let mut argv = vec!["firempo"];
        argv.extend_from_slice(args);
        Harness::try_parse_from(argv)?.loss.to_loss()
    }

    #[test]
    fn flags_override_defaults() {
        let loss = parse(&["--method", "fire-mpo", "--gamma", "0.3", "--lambda", "1"]).unwrap();
        let expected = FiReMpoConfig {
            gamma: 0.3,
            lambda: 1.0,
            ..FiReMpoConfig::default()
        };
        assert_eq!(loss, PreferenceLoss::FireMpo(expected));
        assert_eq!(
            parse(&["--method", "dpo"]).unwrap(),
            PreferenceLoss::Dpo(DpoConfig { beta: 0.1 })
        );
    }

    #[test]
    fn bad_values_and_misplaced_flags_are_errors() {
        let err = parse(&["--lambda", "2"]).unwrap_err().to_string();
        assert!(err.contains("lambda") && err.contains("[0, 1]"), "{err}");
        let err = parse(&["--method", "dpo", "--gamma", "0.1"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--gamma does not apply to --method dpo"),
            "{err}"
        );
    }

    #[test]
    fn config_file_is_read_and_checked() {
        let dir = std::env::temp_dir().join(format!("firempo-loss-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.json");
        std::fs::write(&good, r#"{"method": "rrpo", "alpha": 0.05}"#).unwrap();
        let loss = parse(&[
            "--method",
            "rrpo",
            "--loss-config",
            good.to_str().unwrap(),
            "--beta",
            "0.3",
        ])
        .unwrap();
        assert_eq!(
            loss,
            PreferenceLoss::Rrpo(RrpoConfig {
                beta: 0.3,
                alpha: 0.05
            })
        );
        let typo = dir.join("typo.json");
        std::fs::write(&typo, r#"{"method": "rrpo", "alhpa": 0.05}"#).unwrap();
        let err = format!(
            "{:#}",
            parse(&["--method", "rrpo", "--loss-config", typo.to_str().unwrap()]).unwrap_err()
        );
        assert!(err.contains("typo.json") && err.contains("alhpa"), "{err}");
        let err = parse(&["--loss-config", good.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("disagrees"), "{err}");
    }
}
