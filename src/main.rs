//! The `tortie` command line: a thin shell over the library.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use tortie::diag::Diagnostic;
use tortie::model::load::{LoadResult, load_paths};
use tortie::model::{Resource, convert, emit};

#[derive(Parser)]
#[command(
    name = "tortie",
    version,
    about = "Calico-compatible network policy on nftables"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check resource files; print every problem and exit 1 if any is an error.
    Validate {
        /// Files or directories of YAML/JSON resources.
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        paths: Vec<PathBuf>,
    },
    /// Print the nftables ruleset for one node (nft -f text) to stdout.
    Compile {
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        paths: Vec<PathBuf>,
        /// The node to compile for (matches Pod spec.nodeName, endpoint `node`).
        #[arg(long, env = "NODENAME")]
        node: String,
    },
    /// Print Kubernetes NetworkPolicies as the equivalent projectcalico.org/v3 YAML.
    Convert {
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        paths: Vec<PathBuf>,
    },
}

fn print_diagnostics(diags: &[Diagnostic]) {
    for d in diags {
        eprint!("{}", d.render());
        eprintln!();
    }
}

fn summary(result: &LoadResult) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for l in &result.resources {
        *counts.entry(l.resource.kind().to_string()).or_default() += 1;
    }
    let mut out = String::new();
    for (kind, n) in counts {
        out.push_str(&format!("{kind}: {n} valid\n"));
    }
    out
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Validate { paths } => {
            let result = load_paths(&paths);
            print_diagnostics(&result.diagnostics);
            print!("{}", summary(&result));
            let errors = result.errors().count();
            let warnings = result.diagnostics.len() - errors;
            if errors > 0 {
                eprintln!("{errors} error(s), {warnings} warning(s)");
                Ok(ExitCode::from(1))
            } else {
                if warnings > 0 {
                    eprintln!("{warnings} warning(s)");
                }
                Ok(ExitCode::SUCCESS)
            }
        }
        Command::Compile { paths, node } => {
            let result = load_paths(&paths);
            print_diagnostics(&result.diagnostics);
            let resources: Vec<Resource> = result
                .resources
                .iter()
                .map(|l| l.resource.clone())
                .collect();
            let cluster = tortie::calc::Cluster::build(&resources, &node);
            for n in &cluster.notes {
                eprintln!("note: {}: {}", n.subject, n.message);
            }
            let ruleset = tortie::compile::compile(&cluster, &node);
            print!("{}", ruleset.render());
            Ok(if result.has_errors() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Convert { paths } => {
            let result = load_paths(&paths);
            print_diagnostics(&result.diagnostics);
            let mut first = true;
            for loaded in &result.resources {
                if let Resource::K8sNetworkPolicy(np) = &loaded.resource {
                    let converted = convert::convert_k8s_policy(np);
                    let doc = serde_json::json!({
                        "apiVersion": tortie::model::CALICO_API,
                        "kind": "NetworkPolicy",
                        "metadata": converted.metadata,
                        "spec": converted.spec,
                    });
                    if !first {
                        println!("---");
                    }
                    first = false;
                    print!("{}", emit::to_yaml(&doc));
                }
            }
            Ok(if result.has_errors() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
