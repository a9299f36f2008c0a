//! Bytes → capture reader → segments, and bytes → frame decoder for every link type.
//! Nothing may panic, and a segment never holds more payload than its wire length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer::capture::{self, LinkType};

const LINK_TYPES: [LinkType; 10] = [
    LinkType::NULL,
    LinkType::ETHERNET,
    LinkType::RAW_12,
    LinkType::RAW_14,
    LinkType::RAW,
    LinkType::LOOP,
    LinkType::LINUX_SLL,
    LinkType::IPV4,
    LinkType::IPV6,
    LinkType::LINUX_SLL2,
];

fuzz_target!(|data: &[u8]| {
    if let Ok(mut segments) = capture::segments_from_reader(data, "fuzz") {
        for s in segments.by_ref() {
            assert!(s.payload.len() <= s.wire_len as usize);
        }
        let stats = segments.stats();
        assert!(stats.tcp_segments + stats.non_tcp + stats.fragments <= stats.packets);
    }
    for linktype in LINK_TYPES {
        if let Ok(view) = capture::decode_frame(linktype, data, data.len() as u32) {
            assert!(view.payload.len() <= view.wire_len as usize);
        }
    }
});
