//! Any bytes as a resource file: loading, validation, conversion and
//! compilation must not panic, whatever the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let result = tortie::model::load::load_str(&text, std::path::Path::new("fuzz.yaml"));
    for d in &result.diagnostics {
        let _ = d.render();
    }
    let resources: Vec<_> = result.resources.into_iter().map(|l| l.resource).collect();
    let cluster = tortie::calc::Cluster::build(&resources, "node1");
    let _ = tortie::compile::compile(&cluster, "node1").render();
});
