//! Fuzzes the WebSocket frame decoder: any bytes, fed in any split, give
//! whole messages or a close code, never a panic, and never more output
//! than input allows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wshub::fuzzing::FrameDecoder;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| usize::from(*b)) % (data.len().max(1));
    let mut decoder = FrameDecoder::new(4096);
    let mut pending = Vec::new();
    for part in [&data[..split], &data[split..]] {
        pending.extend_from_slice(part);
        match decoder.decode(&pending) {
            Ok((used, messages)) => {
                assert!(used <= pending.len());
                assert!(messages.iter().map(Vec::len).sum::<usize>() <= pending.len());
                pending.drain(..used);
            }
            Err(_) => return,
        }
    }
});
