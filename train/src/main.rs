//! `csp-train`: train, evaluate, and generate synthetic datasets.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "csp-train", version, about = "Train and evaluate CSPNet classifiers and detectors")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a synthetic shapes dataset (deterministic by seed)
    Synth(csp_train::synth::SynthArgs),
    /// Train a classifier on an image-folder dataset (cross-entropy, SGD)
    Classify(csp_train::trainer::classify::ClassifyArgs),
    /// Train a detector on COCO JSON or YOLO txt annotations (YOLOv3 loss, SGD)
    Detect(csp_train::trainer::detect::DetectArgs),
    /// Evaluate a weights file on a dataset split: top-1/top-5 (classifiers) or COCO AP (detectors)
    Eval(csp_train::evaluate::command::EvalArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Synth(args) => csp_train::synth::run(&args),
        Command::Classify(args) => csp_train::trainer::classify::run(&args),
        Command::Detect(args) => csp_train::trainer::detect::run(&args),
        Command::Eval(args) => csp_train::evaluate::command::run(&args),
    }
}
