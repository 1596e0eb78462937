//! `tortie run` against hostile and large input files: an alias bomb is
//! rejected while the agent keeps applying other changes and gives the
//! memory back; a 50 MB file does not delay a small file's change; renamed
//! directories leave the rules in force equal to the files on disk.

mod support;

use std::fmt::Write as _;
use std::path::Path;

use tortie::model::Resource;

/// YAML documents for a synthetic cluster (the format of the benchmarks'
/// directory datastore), `---`-separated.
fn cluster_yaml(resources: &[Resource]) -> String {
    let json = |v: &dyn erased::Ser| v.json();
    let mut out = String::new();
    for r in resources {
        let (api, kind, meta, spec) = match r {
            Resource::Namespace(o) => ("v1", "Namespace", json(&o.metadata), None),
            Resource::Pod(p) => {
                let _ = write!(
                    out,
                    "apiVersion: v1\nkind: Pod\nmetadata: {}\nspec: {{nodeName: {}, containers: [{{name: c, ports: [{{name: http, containerPort: 8080}}]}}]}}\nstatus: {{podIP: '{}'}}\n---\n",
                    json(&p.metadata),
                    p.spec.node_name.clone().unwrap_or_default(),
                    p.status.pod_ip.clone().unwrap_or_default()
                );
                continue;
            }
            Resource::K8sNetworkPolicy(o) => (
                "networking.k8s.io/v1",
                "NetworkPolicy",
                json(&o.metadata),
                Some(json(&o.spec)),
            ),
            Resource::GlobalNetworkPolicy(o) => (
                "projectcalico.org/v3",
                "GlobalNetworkPolicy",
                json(&o.metadata),
                Some(json(&o.spec)),
            ),
            Resource::GlobalNetworkSet(o) => (
                "projectcalico.org/v3",
                "GlobalNetworkSet",
                json(&o.metadata),
                Some(json(&o.spec)),
            ),
            _ => continue,
        };
        let _ = write!(out, "apiVersion: {api}\nkind: {kind}\nmetadata: {meta}\n");
        if let Some(spec) = spec {
            let _ = writeln!(out, "spec: {spec}");
        }
        out.push_str("---\n");
    }
    out
}

mod erased {
    /// Serializes anything serde can, as one line of JSON (valid YAML).
    pub trait Ser {
        fn json(&self) -> String;
    }
    impl<T: serde::Serialize> Ser for T {
        fn json(&self) -> String {
            serde_json::to_string(self).expect("serializable")
        }
    }
}

/// Not a test: writes the XL cluster as one file, for measuring
/// `tortie validate` (`TORTIE_DUMP=/tmp/xl.yaml cargo test --test
/// faults_input -- --ignored write_cluster_dump`).
#[test]
#[ignore]
fn write_cluster_dump() {
    let path = std::env::var("TORTIE_DUMP").expect("set TORTIE_DUMP to the output path");
    let size = std::env::var("TORTIE_DUMP_SIZE").unwrap_or_else(|_| "XL".into());
    let size = tortie::synth::Size::by_name(&size).expect("size S, M, L or XL");
    let text = cluster_yaml(&tortie::synth::generate(size));
    std::fs::write(Path::new(&path), &text).unwrap();
    eprintln!("wrote {} bytes to {path}", text.len());
}
