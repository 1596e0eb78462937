//! Any bytes as a resource file, loaded within an input budget as the
//! agent loads it: loading, validation, conversion and compilation must not
//! panic, and the budget must hold (whatever the input, it stops parsing
//! at the limit).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tortie::model::yaml::{Budget, Pool};

/// Values per input: an alias bomb that fills it allocates ~150 MB under
/// the address sanitizer (whose quarantine keeps freed memory for a while),
/// which stays inside `-rss_limit_mb=512`; 1,000,000 reached 605 MB.
const FILE_VALUES: usize = 250_000;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let pool = Pool::new(FILE_VALUES);
    let mut budget = Budget::with_pool(FILE_VALUES, &pool, 0);
    let path = std::path::Path::new("fuzz.yaml");
    let result = tortie::model::load::load_str_with(&text, path, &mut budget);
    assert!(budget.used() <= FILE_VALUES, "budget overrun: {}", budget.used());
    assert!(!result.rejected || result.resources.is_empty());
    for d in &result.diagnostics {
        let _ = d.render();
    }
    let resources: Vec<_> = result.resources.into_iter().map(|l| l.resource).collect();
    let cluster = tortie::calc::Cluster::build(&resources, "node1");
    let _ = tortie::compile::compile(&cluster, "node1").render();
});
