//! Any bytes given to the safetensors header reader give a layout or an
//! error: never a panic, a hang, or an allocation beyond the input's size.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = resid_io::checkpoint::parse_layout(std::path::Path::new("fuzz.safetensors"), data, 0);
});
