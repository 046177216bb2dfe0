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
    /// RRPO as its authors define it: phrase-level rank term, token-wise forward KL on every
    /// token of `y+`.
    Rrpo,
    /// The FiRe-MPO paper's "RRPO" row: the FiRe-MPO loss with γ = 0 (no visual term) and λ = 1
    /// (forward KL only, on the phrase tokens of `y+`); β and α stay settable.
    RrpoPhrase,
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
            Method::RrpoPhrase => PreferenceLoss::FireMpo(rrpo_phrase(FiReMpoConfig::default())),
        }
    }

    fn apply_overrides(&self, loss: &mut PreferenceLoss) -> anyhow::Result<()> {
        if self.method == Method::RrpoPhrase {
            for (flag, given) in [("gamma", self.gamma), ("lambda", self.lambda)] {
                anyhow::ensure!(
                    given.is_none(),
                    "--{flag} does not apply to --method rrpo-phrase (it is FiRe-MPO with γ = 0, \
                     λ = 1); use --method fire-mpo to set it"
                );
            }
        }
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
                anyhow::ensure!(
                    self.method != Method::RrpoPhrase || *c == rrpo_phrase(*c),
                    "--method rrpo-phrase is FiRe-MPO with gamma 0 and lambda 1, but the loss \
                     config sets gamma {} and lambda {}; drop them from the file or use \
                     --method fire-mpo",
                    c.gamma,
                    c.lambda
                );
            }
        }
        Ok(())
    }
}

/// The paper's RRPO row from a FiRe-MPO configuration: γ = 0, λ = 1, β and α kept.
fn rrpo_phrase(config: FiReMpoConfig) -> FiReMpoConfig {
    FiReMpoConfig {
        gamma: 0.0,
        lambda: 1.0,
        ..config
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

    /// The loss of `loss` on one fixed batch: the playground's seeded reference logits and
    /// answers, and a policy moved away from the reference by seeded noise.
    fn loss_value(loss: PreferenceLoss) -> f32 {
        use crate::playground::{LogitTable, Playground, PlaygroundConfig};
        use crate::train::{Objective, TrainerConfig};
        use burn::module::Param;
        use burn::tensor::{Distribution, Tensor};
        type B = burn::backend::Autodiff<burn::backend::NdArray<f32>>;
        let device = Default::default();
        let config = PlaygroundConfig {
            loss,
            pairs: 3,
            answer_len: 5,
            vocab: 7,
            trainer: TrainerConfig::default(),
            run_dir: std::env::temp_dir(),
            resume: false,
        };
        let (playground, table) = Playground::<B>::new(&config, &device);
        let noise = Tensor::random(table.logits.dims(), Distribution::Normal(0.0, 1.0), &device);
        let moved = LogitTable {
            logits: Param::from_tensor((table.logits.val() + noise).detach()),
        };
        let output = playground.loss(&moved, &[0, 1, 2]).unwrap();
        output.loss.into_scalar()
    }

    #[test]
    fn rrpo_phrase_is_fire_mpo_without_visual_term_and_with_forward_kl() {
        let phrase = parse(&[
            "--method",
            "rrpo-phrase",
            "--beta",
            "0.2",
            "--alpha",
            "0.05",
        ])
        .unwrap();
        let fire = parse(&[
            "--method", "fire-mpo", "--gamma", "0", "--lambda", "1", "--beta", "0.2", "--alpha",
            "0.05",
        ])
        .unwrap();
        assert_eq!(phrase, fire);
        let (phrase, fire) = (loss_value(phrase), loss_value(fire));
        assert_eq!(phrase, fire, "same loss on the same inputs");
        // Not a coincidence of the batch: the original RRPO and default FiRe-MPO differ on it.
        let rrpo =
            loss_value(parse(&["--method", "rrpo", "--beta", "0.2", "--alpha", "0.05"]).unwrap());
        let fire_default = loss_value(parse(&["--method", "fire-mpo"]).unwrap());
        assert!(
            (rrpo - phrase).abs() > 1e-4,
            "rrpo {rrpo} vs rrpo-phrase {phrase}"
        );
        assert!(
            (fire_default - phrase).abs() > 1e-4,
            "fire-mpo {fire_default} vs {phrase}"
        );

        let err = parse(&["--method", "rrpo-phrase", "--gamma", "0.1"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--gamma does not apply to --method rrpo-phrase"),
            "{err}"
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
