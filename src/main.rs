//! The `tortie` command line: a thin shell over the library.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use tortie::diag::Diagnostic;
use tortie::model::load::LoadResult;
use tortie::model::{Resource, convert, emit};
use tortie::nft::{Dataplane, Target};

#[derive(Parser)]
#[command(
    name = "tortie",
    version,
    about = "Calico-compatible network policy on nftables"
)]
struct Cli {
    /// tortie's own log lines (stderr): `text` or `json`. The level comes
    /// from RUST_LOG, else FelixConfiguration logSeverityScreen (or
    /// FELIX_LOGSEVERITYSCREEN), else info.
    #[arg(long, global = true, env = "TORTIE_LOG_FORMAT", default_value = "text")]
    log_format: tortie::obs::Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
// Parsed once at start-up: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Check resource files; print every problem and exit 1 if any is an error.
    Validate {
        /// Files or directories of YAML/JSON resources; `-` reads standard input.
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        paths: Vec<PathBuf>,
        /// `text` (rustc-style, on stderr) or `json` (one object on stdout,
        /// for CI).
        #[arg(short = 'o', long = "output", default_value = "text", value_parser = ["text", "json"])]
        output: String,
        /// Treat documents of kinds tortie does not use (IPPool, Deployment,
        /// ConfigMap…) as errors instead of skipping them with a note.
        #[arg(long)]
        strict: bool,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Print tortie's version and build, the nft binary found and the kernel.
    Version,
    /// Print a synthetic cluster (S, M, L or XL) as one YAML dump: the
    /// input of the loader's size and speed measurements.
    #[command(hide = true)]
    SynthDump {
        #[arg(long, default_value = "XL")]
        size: String,
    },
    /// Print the nftables ruleset for one node (nft -f text) to stdout.
    Compile {
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        paths: Vec<PathBuf>,
        /// The node to compile for (matches Pod spec.nodeName, endpoint `node`).
        #[arg(long, env = "NODENAME")]
        node: String,
        /// The node's interface NAME with its addresses (repeatable): host
        /// endpoints with only expectedIPs bind to the interfaces holding them.
        #[arg(long = "host-interface", value_name = "NAME=IP[,IP…]")]
        host_interfaces: Vec<tortie::calc::HostInterface>,
        /// Treat documents of kinds tortie does not use (IPPool, Deployment,
        /// ConfigMap…) as errors instead of skipping them with a note.
        #[arg(long)]
        strict: bool,
    },
    /// Compile for one node and apply to the kernel in one transaction.
    Apply {
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        paths: Vec<PathBuf>,
        #[arg(long, env = "NODENAME")]
        node: String,
        /// Program this network namespace (a name under /var/run/netns, or a path)
        /// instead of the current one.
        #[arg(long)]
        netns: Option<String>,
        /// Print the transaction instead of sending it.
        #[arg(long)]
        dry_run: bool,
        /// The node's interface NAME with its addresses (repeatable): host
        /// endpoints with only expectedIPs bind to the interfaces holding them.
        /// Default: the target namespace's interfaces, read by netlink.
        #[arg(long = "host-interface", value_name = "NAME=IP[,IP…]")]
        host_interfaces: Vec<tortie::calc::HostInterface>,
        /// Treat documents of kinds tortie does not use (IPPool, Deployment,
        /// ConfigMap…) as errors instead of skipping them with a note.
        #[arg(long)]
        strict: bool,
    },
    /// Keep the kernel in step with a datastore until SIGTERM.
    Run {
        /// `dir:PATH` (a directory of YAML/JSON resources, watched) or
        /// `kubernetes` (in-cluster config or KUBECONFIG).
        #[arg(
            long,
            env = "TORTIE_DATASTORE",
            default_value = "dir:/etc/tortie/policies"
        )]
        datastore: tortie::daemon::Datastore,
        /// With the kubernetes datastore: read the Calico kinds from tortie's
        /// `projectcalico.org/v3` CRDs (v3), or from an existing Calico
        /// cluster's `crd.projectcalico.org/v1` objects (v1).
        #[arg(long, env = "TORTIE_CALICO_CRDS", default_value = "v3", value_parser = ["v3", "v1"])]
        calico_crds: String,
        #[arg(long, env = "NODENAME")]
        node: String,
        /// Program this network namespace instead of the current one.
        #[arg(long, env = "TORTIE_NETNS")]
        netns: Option<String>,
        /// Where to serve /metrics, /livez and /readyz; `none` to disable.
        #[arg(long, env = "TORTIE_METRICS_ADDR", default_value = "127.0.0.1:9091")]
        metrics_addr: String,
        /// How often to compare the kernel with the desired ruleset (e.g. 90s);
        /// overrides FelixConfiguration nftablesRefreshInterval.
        #[arg(long, env = "TORTIE_REFRESH_INTERVAL")]
        refresh_interval: Option<String>,
        /// The debounce, in milliseconds: the first change after a quiet
        /// spell is applied at once; changes within this window after it
        /// (or the last compute's duration, if longer; at most 1 s) are
        /// coalesced. The directory source waits this long for file events
        /// to go quiet before reading.
        #[arg(long, default_value_t = 30)]
        debounce_ms: u64,
        /// Where Log actions and logged drops go: `nflog` (read by tortie and
        /// sent to syslog with the policy named) or `kernel` (Calico's
        /// `calico-packet:` lines in the kernel log).
        #[arg(long, env = "TORTIE_LOG_BACKEND", default_value = "nflog", value_parser = ["nflog", "kernel"])]
        log_backend: String,
        /// The NFLOG group for the nflog backend.
        #[arg(long, env = "TORTIE_NFLOG_GROUP", default_value_t = 20)]
        nflog_group: u16,
        /// Log one record per new connection of every local workload, allowed
        /// or denied (as FelixConfiguration `connectionLogsEnabled: true`;
        /// a Namespace annotated `tortie.io/connection-logs: "true"` turns
        /// them on for its workloads only). Needs the nflog backend.
        #[arg(long, env = "TORTIE_CONNECTION_LOGS")]
        connection_logs: bool,
        /// Syslog destination for the nflog backend: unix:PATH, udp:HOST:PORT,
        /// tcp:HOST:PORT or none.
        #[arg(long, env = "TORTIE_SYSLOG", default_value = "unix:/dev/log")]
        syslog: tortie::logging::Sink,
        /// Also append each logged packet as a JSON line to this file.
        #[arg(long, env = "TORTIE_LOG_JSON")]
        log_json: Option<PathBuf>,
        /// How finely policy hits are exported: `rule` (tortie_rule_* per
        /// rule, and tortie_policy_* per policy) or `policy` (per policy
        /// only, for fewer series).
        #[arg(
            long,
            env = "TORTIE_POLICY_METRICS",
            value_enum,
            default_value = "rule"
        )]
        policy_metrics: tortie::daemon::metrics::HitDetail,
        /// Deadline of one nft transaction (e.g. 30s); on expiry nft is
        /// killed and the attempt counts as a failure.
        #[arg(long, env = "TORTIE_NFT_TIMEOUT", default_value = "30s", value_parser = nft_deadline)]
        nft_timeout: std::time::Duration,
        /// Deadline of one listing of the table (the JSON read-back of a
        /// very large table takes minutes today).
        #[arg(long, env = "TORTIE_NFT_LIST_TIMEOUT", default_value = "300s", value_parser = nft_deadline)]
        nft_list_timeout: std::time::Duration,
        /// Directory of the one-agent-per-namespace lock files.
        #[arg(long, env = "TORTIE_LOCK_DIR", default_value = tortie::nft::lock::LOCK_DIR)]
        lock_dir: PathBuf,
        #[command(flatten)]
        limits: LimitArgs,
        /// How often the whole datastore directory is compared with what is
        /// in force, whatever inotify said (at least 1s).
        #[arg(long, env = "TORTIE_RESCAN_INTERVAL", default_value = "30s")]
        rescan_interval: String,
    },
    /// Show which stage, tier, policy and rule decide one packet on a node,
    /// evaluated on the compiled ruleset (the first packet of a new
    /// connection).
    Trace(TraceArgs),
    /// Run the NetworkPolicy tutorial in a sandbox of network namespaces and
    /// show, with real packets, what each step allows.
    Demo,
    /// Print the CustomResourceDefinitions for the projectcalico.org/v3 kinds.
    Crds,
    /// Print Kubernetes NetworkPolicies as the equivalent projectcalico.org/v3 YAML.
    Convert {
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        paths: Vec<PathBuf>,
    },
    /// Parse a Calico selector and print its canonical form; with --labels,
    /// print `match` or `no match` (exit 0 or 1). A parse error exits 2.
    Selector {
        /// The selector expression, e.g. "app == 'web' && has(tier)".
        expr: String,
        /// Labels to evaluate against: `k=v,k2=v2` (`k=` is an empty value,
        /// `''` the empty label set).
        #[arg(long)]
        labels: Option<String>,
    },
}

/// `tortie trace` flags.
#[derive(clap::Args, Debug)]
struct TraceArgs {
    /// Files or directories of YAML/JSON resources; `-` reads standard input.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    paths: Vec<PathBuf>,
    /// The node whose ruleset decides (as for `compile`).
    #[arg(long, env = "NODENAME")]
    node: String,
    /// The sender: NAMESPACE/POD, hostendpoint/NAME or an IP address.
    #[arg(long)]
    from: tortie::trace::Peer,
    /// The receiver: NAMESPACE/POD, hostendpoint/NAME or an IP address.
    #[arg(long)]
    to: tortie::trace::Peer,
    /// tcp, udp, sctp, icmp, icmpv6 or a protocol number.
    #[arg(long, value_parser = tortie::trace::parse_proto)]
    proto: u8,
    /// Destination port (tcp, udp, sctp).
    #[arg(long)]
    port: Option<u16>,
    /// Source port (default 32768).
    #[arg(long)]
    sport: Option<u16>,
    /// ICMP type (default: echo request).
    #[arg(long = "icmp-type")]
    icmp_type: Option<u8>,
    /// ICMP code (default 0).
    #[arg(long = "icmp-code", requires = "icmp_type")]
    icmp_code: Option<u8>,
    /// The interface a packet from a remote SRC arrives on (needed when the
    /// node has host endpoints on named interfaces).
    #[arg(long)]
    iif: Option<String>,
    /// The interface a packet to a remote DST leaves by.
    #[arg(long)]
    oif: Option<String>,
    /// A destination NAT the node does outside tortie's table (e.g. a
    /// kube-proxy NodePort): the IP:PORT it rewrites DST to before routing.
    #[arg(long)]
    dnat: Option<std::net::SocketAddr>,
    /// The node's interface NAME with its addresses (repeatable): binds
    /// expectedIPs-only host endpoints and makes those addresses the node's.
    #[arg(long = "host-interface", value_name = "NAME=IP[,IP…]")]
    host_interfaces: Vec<tortie::calc::HostInterface>,
    /// `text` or `json` (the schema in docs/trace.md).
    #[arg(short = 'o', long = "output", default_value = "text", value_parser = ["text", "json"])]
    output: String,
    /// Evaluate staged policies as if enforced (StagedAction Set replaces
    /// or adds the policy, Delete removes it).
    #[arg(long)]
    staged: bool,
}

impl TraceArgs {
    fn query(&self) -> tortie::trace::Query {
        tortie::trace::Query {
            from: self.from.clone(),
            to: self.to.clone(),
            proto: self.proto,
            port: self.port,
            sport: self.sport,
            icmp_type: self.icmp_type,
            icmp_code: self.icmp_code,
            iif: self.iif.clone(),
            oif: self.oif.clone(),
            dnat: self.dnat,
            ct_invalid: false,
        }
    }
}

/// `tortie trace`: exit 0 with the trace (whatever the verdict), 1 if the
/// input has errors, 2 if the query cannot be traced.
fn trace_command(args: TraceArgs) -> Result<ExitCode> {
    let ifaces = tortie::calc::HostInterface::map(&args.host_interfaces);
    let (result, cluster) = load_cluster(&args.paths, &args.node, ifaces, false, args.staged);
    let trace = tortie::trace::trace_cluster(&cluster, &args.node, &args.query())?;
    if args.output == "json" {
        print!("{}", tortie::trace::render::json(&trace));
    } else {
        print!("{}", tortie::trace::render::text(&trace));
    }
    Ok(if result.has_errors() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Parses `k=v,k2=v2` into a label map: `k=` is an empty value, the empty
/// text is the empty set; a pair without `=`, an empty key or a repeated
/// key is an error naming the item.
fn parse_label_list(text: &str) -> Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    if text.is_empty() {
        return Ok(labels);
    }
    for (i, item) in text.split(',').enumerate() {
        let n = i + 1;
        let Some((key, value)) = item.split_once('=') else {
            anyhow::bail!(
                "--labels item {n} `{item}` has no `=`: write `key=value` (or `{item}=` for an empty value)"
            );
        };
        if key.is_empty() {
            anyhow::bail!("--labels item {n} `{item}` has an empty key: write `key=value`");
        }
        if labels.insert(key.to_string(), value.to_string()).is_some() {
            anyhow::bail!("--labels item {n}: key `{key}` is given twice; give each key once");
        }
    }
    Ok(labels)
}

/// `tortie selector`: canonical form, or match / no match; 2 on errors.
fn selector_command(expr: &str, labels: Option<&str>) -> Result<ExitCode> {
    let labels = labels.map(parse_label_list).transpose()?;
    let selector = match tortie::selector::parse(expr) {
        Ok(s) => s,
        Err(e) => {
            // The caret goes under the character at the error's byte offset.
            let column = expr[..e.offset.min(expr.len())].chars().count() + 1;
            eprintln!("error: selector: {} (at column {column})", e.message);
            eprintln!("  {expr}");
            eprintln!("  {}^", " ".repeat(column - 1));
            return Ok(ExitCode::from(2));
        }
    };
    match labels {
        None => {
            println!("{}", selector.canonical());
            Ok(ExitCode::SUCCESS)
        }
        Some(labels) if selector.matches(&labels) => {
            println!("match");
            Ok(ExitCode::SUCCESS)
        }
        Some(_) => {
            println!("no match");
            Ok(ExitCode::from(1))
        }
    }
}

/// Input budgets; each command has its own defaults (see `limits`).
#[derive(clap::Args)]
struct LimitArgs {
    /// Largest input file, checked before it is read (e.g. 16MiB, 300MB).
    /// Default: 16MiB for `run`, 256MiB for `validate`.
    #[arg(long, env = "TORTIE_MAX_FILE_SIZE")]
    max_file_size: Option<String>,
    /// Most values (scalars, lists, maps, alias copies included) one file may
    /// hold. Default: 3000000 for `run`, 40000000 for `validate`.
    #[arg(long, env = "TORTIE_MAX_FILE_VALUES")]
    max_file_values: Option<usize>,
    /// Most values all files together may hold. Default: 40000000 for
    /// `run`, 80000000 for `validate`.
    #[arg(long, env = "TORTIE_MAX_DATASTORE_VALUES")]
    max_datastore_values: Option<usize>,
}

impl LimitArgs {
    fn limits(&self, defaults: tortie::model::yaml::Limits) -> Result<tortie::model::yaml::Limits> {
        let max_file_bytes = match &self.max_file_size {
            None => defaults.max_file_bytes,
            Some(text) => tortie::model::load::parse_size(text).ok_or_else(|| {
                anyhow::anyhow!(
                    "--max-file-size `{text}` is not a size (e.g. 16MiB, 300MB, 1048576)"
                )
            })?,
        };
        Ok(tortie::model::yaml::Limits {
            max_file_bytes,
            max_file_values: self
                .max_file_values
                .unwrap_or(defaults.max_file_values)
                .max(1),
            max_total_values: self
                .max_datastore_values
                .unwrap_or(defaults.max_total_values)
                .max(1),
        })
    }
}

/// Every diagnostic, rustc-style; notes (skipped documents) on one line each.
fn print_diagnostics(diags: &[Diagnostic]) {
    for d in diags {
        if d.severity == tortie::diag::Severity::Note {
            eprintln!("{}", d.one_line());
            continue;
        }
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
    if result.skipped > 0 {
        out.push_str(&format!(
            "{} document(s) of kinds tortie does not use skipped\n",
            result.skipped
        ));
    }
    out
}

/// Loads files and directories; a path `-` is standard input.
fn load_inputs(paths: &[PathBuf], limits: &tortie::model::yaml::Limits) -> Result<LoadResult> {
    let (stdin, files): (Vec<&PathBuf>, Vec<&PathBuf>) =
        paths.iter().partition(|p| p.as_os_str() == "-");
    let files: Vec<PathBuf> = files.into_iter().cloned().collect();
    let mut result = if files.is_empty() {
        LoadResult::default()
    } else {
        tortie::model::load::load_paths_with(&files, limits)
    };
    if !stdin.is_empty() {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| anyhow::anyhow!("cannot read standard input: {e}"))?;
        let mut budget = tortie::model::yaml::Budget::new(limits.max_file_values);
        let from_stdin =
            tortie::model::load::load_str_with(&text, std::path::Path::new("<stdin>"), &mut budget);
        result.extend(from_stdin);
    }
    Ok(result)
}

/// `validate -o json`: every diagnostic with its position, and the counts.
fn diagnostics_json(result: &LoadResult) -> serde_json::Value {
    let items: Vec<serde_json::Value> = result
        .diagnostics
        .iter()
        .map(|d| {
            serde_json::json!({
                "severity": match d.severity {
                    tortie::diag::Severity::Error => "error",
                    tortie::diag::Severity::Warning => "warning",
                    tortie::diag::Severity::Note => "note",
                },
                "file": d.file.as_ref().map(|f| f.display().to_string()),
                "line": d.pos.map(|p| p.line),
                "column": d.pos.map(|p| p.col),
                "resource": d.resource,
                "field": d.path.as_ref().filter(|p| !p.is_root()).map(|p| p.to_string()),
                "message": d.message,
                "help": d.hint,
            })
        })
        .collect();
    let (errors, warnings, notes) = result.counts();
    serde_json::json!({
        "diagnostics": items,
        "errors": errors,
        "warnings": warnings,
        "notes": notes,
        "skipped": result.skipped,
        "valid": result.resources.len(),
    })
}

/// `tortie version`: the build, and what it will drive on this machine.
fn version_text() -> String {
    let nft = std::process::Command::new("nft")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "not found on PATH (install nftables)".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    format!(
        "tortie {} (commit {})\nnft: {nft}\nkernel: {kernel}\n",
        env!("CARGO_PKG_VERSION"),
        env!("TORTIE_GIT_COMMIT")
    )
}

/// Loads, reports problems, and compiles the valid resources for `node`.
fn load_and_compile(
    paths: &[PathBuf],
    node: &str,
    host_interfaces: BTreeMap<String, Vec<std::net::IpAddr>>,
    strict: bool,
) -> (LoadResult, tortie::compile::ir::Ruleset) {
    let (result, cluster) = load_cluster(paths, node, host_interfaces, strict, false);
    let ruleset = tortie::compile::compile(&cluster, node);
    (result, ruleset)
}

/// Loads, reports problems, and builds the cluster of the valid resources
/// as `node` sees it.
fn load_cluster(
    paths: &[PathBuf],
    node: &str,
    host_interfaces: BTreeMap<String, Vec<std::net::IpAddr>>,
    strict: bool,
    staged_enforced: bool,
) -> (LoadResult, tortie::calc::Cluster) {
    let mut result = load_inputs(paths, &tortie::model::yaml::Limits::CLI).unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        std::process::exit(2)
    });
    if strict {
        result.make_strict();
    }
    print_diagnostics(&result.diagnostics);
    print_diagnostics(&tortie::model::lint::lint(&result.resources));
    // Moved, not copied: the callers read only the diagnostics from here on.
    let resources: Vec<Resource> = std::mem::take(&mut result.resources)
        .into_iter()
        .map(|l| l.resource)
        .collect();
    let resources = if staged_enforced {
        tortie::model::staged::apply_staged(&resources)
    } else {
        resources
    };
    let (env, problems) = tortie::calc::felix_env(std::env::vars());
    for p in &problems {
        eprintln!("warning: {p}");
    }
    let mut cluster = tortie::calc::Cluster::build_with_env(&resources, node, Some(&env));
    cluster.host_interfaces = host_interfaces;
    for n in cluster
        .notes
        .iter()
        .chain(&tortie::calc::node_notes(&cluster, node))
    {
        eprintln!("note: {}: {}", n.subject, n.message);
    }
    (result, cluster)
}

/// The shortest nft deadline accepted: below it even a tiny table misses it.
const MIN_NFT_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);

/// A duration flag, at least `min`.
fn duration_flag(flag: &str, text: &str, min: std::time::Duration) -> Result<std::time::Duration> {
    let d = tortie::model::parse_duration(text)
        .ok_or_else(|| anyhow::anyhow!("{flag} `{text}` is not a duration (e.g. 90s, 5m)"))?;
    if d < min {
        anyhow::bail!(
            "{flag} `{text}` is below the minimum of {}; use at least that",
            format_min(min)
        );
    }
    Ok(d)
}

/// Parses an nft deadline flag (at least `MIN_NFT_TIMEOUT`).
fn nft_deadline(text: &str) -> std::result::Result<std::time::Duration, String> {
    duration_flag("the deadline", text, MIN_NFT_TIMEOUT).map_err(|e| e.to_string())
}

fn format_min(d: std::time::Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The log level handle, for `run` (FelixConfiguration may change it).
static LOG_LEVEL: std::sync::OnceLock<tortie::obs::Level> = std::sync::OnceLock::new();

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Version => {
            print!("{}", version_text());
            Ok(ExitCode::SUCCESS)
        }
        Command::SynthDump { size } => {
            let size = tortie::synth::Size::by_name(&size)
                .ok_or_else(|| anyhow::anyhow!("--size `{size}`: expected S, M, L or XL"))?;
            print!("{}", emit::cluster_dump(&tortie::synth::generate(size)));
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate {
            paths,
            output,
            strict,
            limits,
        } => {
            let limits = limits.limits(tortie::model::yaml::Limits::CLI)?;
            let mut result = load_inputs(&paths, &limits)?;
            if strict {
                result.make_strict();
            }
            let lints = tortie::model::lint::lint(&result.resources);
            result.diagnostics.extend(lints);
            if output == "json" {
                println!("{}", diagnostics_json(&result));
                return Ok(if result.has_errors() {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                });
            }
            print_diagnostics(&result.diagnostics);
            print!("{}", summary(&result));
            let (errors, warnings, _) = result.counts();
            // A one-shot command: the OS takes the memory back at exit faster
            // than freeing a large cluster object by object.
            std::mem::forget(result);
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
        Command::Trace(args) => trace_command(args),
        Command::Compile {
            paths,
            node,
            host_interfaces,
            strict,
        } => {
            let ifaces = tortie::calc::HostInterface::map(&host_interfaces);
            let (result, ruleset) = load_and_compile(&paths, &node, ifaces, strict);
            print!("{}", ruleset.render());
            Ok(if result.has_errors() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Apply {
            paths,
            node,
            netns,
            dry_run,
            host_interfaces,
            strict,
        } => {
            let target = netns.as_deref().map(Target::named).unwrap_or_default();
            // Without --host-interface, the target namespace's own interfaces
            // (read-only, by netlink) bind expectedIPs-only host endpoints.
            let ifaces = if host_interfaces.is_empty() {
                tortie::hostifaces::read(&target)?
            } else {
                tortie::calc::HostInterface::map(&host_interfaces)
            };
            let (result, ruleset) = load_and_compile(&paths, &node, ifaces, strict);
            let mut dp = Dataplane::new(target);
            if dry_run {
                let (plan, _) = dp.plan(&ruleset)?;
                if !plan.prepare.is_empty() {
                    println!("# first transaction: create and fill new sets");
                    print!("{}", plan.prepare);
                    println!("# second transaction: the change itself");
                }
                print!("{}", plan.text);
                if !plan.cleanup.is_empty() {
                    println!(
                        "# then, in a second transaction, remove what is no longer referenced:"
                    );
                    print!("{}", plan.cleanup);
                }
                return Ok(if result.has_errors() {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                });
            }
            let report = tortie::nft::apply_with_retry(
                &mut dp,
                &ruleset,
                3,
                std::time::Duration::from_millis(50),
            )?;
            if !dp.verify(&ruleset)? {
                anyhow::bail!("the kernel does not hold the ruleset after applying it");
            }
            eprintln!(
                "applied: {} chains written, {} deleted, {} elements added, {} removed{} in {:?}",
                report.stats.chains_written,
                report.stats.chains_deleted,
                report.stats.elements_added,
                report.stats.elements_deleted,
                if report.stats.full_rebuild {
                    " (whole table)"
                } else {
                    ""
                },
                report.duration
            );
            if result.has_errors() {
                eprintln!("the invalid resources above were left out; everything else is in force");
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            mut datastore,
            calico_crds,
            node,
            netns,
            metrics_addr,
            refresh_interval,
            debounce_ms,
            log_backend,
            nflog_group,
            connection_logs,
            syslog,
            log_json,
            policy_metrics,
            nft_timeout,
            nft_list_timeout,
            lock_dir,
            limits,
            rescan_interval,
        } => {
            let rescan_interval = tortie::model::parse_duration(&rescan_interval)
                .filter(|d| *d >= std::time::Duration::from_secs(1))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--rescan-interval `{rescan_interval}` is not a duration of at least 1s (e.g. 30s, 5m)"
                    )
                })?;
            let refresh = match refresh_interval.as_deref() {
                None => None,
                Some(text) => Some(duration_flag(
                    "--refresh-interval",
                    text,
                    tortie::daemon::MIN_REFRESH,
                )?),
            };
            let nft_limits = tortie::nft::Limits {
                transaction: nft_timeout,
                list: nft_list_timeout,
                stop: None,
            };
            let metrics_addr = match metrics_addr.as_str() {
                "none" => None,
                a => Some(
                    a.parse()
                        .map_err(|e| anyhow::anyhow!("--metrics-addr `{a}`: {e}"))?,
                ),
            };
            if calico_crds == "v1"
                && let tortie::daemon::Datastore::Kubernetes(api) = &mut datastore
            {
                *api = tortie::datastore::kubernetes::CalicoApi::CrdV1;
            }
            let opts = tortie::daemon::Options {
                datastore,
                node,
                target: netns.as_deref().map(Target::named).unwrap_or_default(),
                metrics_addr,
                refresh,
                debounce: std::time::Duration::from_millis(debounce_ms),
                log_backend: if log_backend == "kernel" {
                    tortie::calc::LogBackend::Kernel
                } else {
                    tortie::calc::LogBackend::Nflog { group: nflog_group }
                },
                connection_logs,
                syslog,
                log_json,
                hit_detail: policy_metrics,
                nft_limits,
                lock_dir,
                limits: limits.limits(tortie::model::yaml::Limits::DAEMON)?,
                rescan_interval,
                log_level: LOG_LEVEL.get().cloned(),
            };
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                signal_hook::flag::register(sig, stop.clone())?;
            }
            tortie::daemon::run(&opts, stop)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Crds => {
            print!("{}", tortie::manifests::crds_yaml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo => {
            let report = tortie::demo::run(&mut std::io::stdout())?;
            Ok(if report.mismatches.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Selector { expr, labels } => selector_command(&expr, labels.as_deref()),
        Command::Convert { paths } => {
            let result = load_inputs(&paths, &tortie::model::yaml::Limits::CLI)?;
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
            if first {
                eprintln!(
                    "note: the input holds no Kubernetes NetworkPolicy, so there is nothing to convert (Calico resources are already projectcalico.org/v3)"
                );
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
    let severity = std::env::var("FELIX_LOGSEVERITYSCREEN").ok();
    let level = tortie::obs::init(cli.log_format, severity.as_deref());
    LOG_LEVEL.set(level).ok();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace_args(extra: &[&str]) -> Result<TraceArgs, clap::Error> {
        let mut argv = vec!["tortie", "trace", "-f", "x.yaml", "--node", "n1"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv)?.command {
            Command::Trace(a) => Ok(a),
            _ => panic!("not the trace command"),
        }
    }

    #[test]
    fn trace_flags_parse_into_a_query() {
        let a = trace_args(&[
            "--from",
            "default/web",
            "--to",
            "fd74:6f72::9",
            "--proto",
            "UDP",
            "--port",
            "53",
            "--oif",
            "eth1",
            "-o",
            "json",
        ])
        .unwrap();
        let q = a.query();
        assert_eq!(
            q.from,
            tortie::trace::Peer::Pod {
                namespace: "default".into(),
                name: "web".into()
            }
        );
        assert_eq!(
            q.to,
            tortie::trace::Peer::Ip("fd74:6f72::9".parse().unwrap())
        );
        assert_eq!(
            (q.proto, q.port, q.oif.as_deref()),
            (17, Some(53), Some("eth1"))
        );
        assert_eq!(a.output, "json");
        let icmp = trace_args(&[
            "--from",
            "hostendpoint/h1",
            "--to",
            "198.18.0.1",
            "--proto",
            "icmp",
            "--icmp-type",
            "3",
            "--icmp-code",
            "1",
        ])
        .unwrap()
        .query();
        assert_eq!(
            (icmp.proto, icmp.icmp_type, icmp.icmp_code),
            (1, Some(3), Some(1))
        );
    }

    #[test]
    fn bad_trace_flags_are_refused() {
        let base = ["--from", "a/b", "--to", "c/d"];
        for bad in [
            &["--proto", "tcpx"][..],
            &["--proto", "tcp", "--port", "70000"],
            &["--proto", "icmp", "--icmp-code", "1"],
            &["--proto", "tcp", "-o", "yaml"],
        ] {
            let mut v = base.to_vec();
            v.extend_from_slice(bad);
            assert!(trace_args(&v).is_err(), "{bad:?}");
        }
        assert!(trace_args(&["--from", "web", "--to", "c/d", "--proto", "tcp"]).is_err());
    }
}
