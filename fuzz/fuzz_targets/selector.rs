//! Any text: the selector parser must not panic, and anything it accepts
//! must print to a canonical form that parses back to the same selector.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(sel) = tortie::selector::parse(text) {
        let canonical = sel.canonical();
        let again = tortie::selector::parse(&canonical).expect("canonical form parses");
        assert_eq!(again, sel, "round trip of {text:?} via {canonical:?}");
        let _ = sel.uid();
    }
});
