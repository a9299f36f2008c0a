//! Reader tests on hand-built files: every container rule, one test each.

use super::*;

/// A raw IPv4 TCP SYN, 40 bytes (the frame used in most tests, link type RAW).
const SYN: [u8; 40] = [
    0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, //
    0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
];

fn u16b(v: u16, big: bool) -> [u8; 2] {
    if big {
        v.to_be_bytes()
    } else {
        v.to_le_bytes()
    }
}

fn u32b(v: u32, big: bool) -> [u8; 4] {
    if big {
        v.to_be_bytes()
    } else {
        v.to_le_bytes()
    }
}

/// A classic pcap file with the given magic and records (sec, frac, frame).
fn pcap(big: bool, magic: u32, linktype: u32, records: &[(u32, u32, &[u8])]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend(u32b(magic, big));
    f.extend(u16b(2, big));
    f.extend(u16b(4, big));
    f.extend([0; 8]);
    f.extend(u32b(65535, big));
    f.extend(u32b(linktype, big));
    for (sec, frac, data) in records {
        f.extend(u32b(*sec, big));
        f.extend(u32b(*frac, big));
        f.extend(u32b(data.len() as u32, big));
        f.extend(u32b(data.len() as u32, big));
        f.extend_from_slice(data);
    }
    f
}

fn block(big: bool, ty: u32, body: &[u8]) -> Vec<u8> {
    let mut body = body.to_vec();
    while !body.len().is_multiple_of(4) {
        body.push(0);
    }
    let len = (body.len() + 12) as u32;
    let mut b = Vec::new();
    b.extend(u32b(ty, big));
    b.extend(u32b(len, big));
    b.extend(body);
    b.extend(u32b(len, big));
    b
}

fn shb(big: bool) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(u32b(PCAPNG_BYTE_ORDER_MAGIC, big));
    body.extend(u16b(1, big));
    body.extend(u16b(0, big));
    body.extend([0xff; 8]); // section length unknown
    block(big, PCAPNG_SHB, &body)
}

/// Interface description block; `tsresol` adds an if_tsresol option.
fn idb(big: bool, linktype: u16, tsresol: Option<u8>) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(u16b(linktype, big));
    body.extend([0, 0]);
    body.extend(u32b(0, big));
    if let Some(r) = tsresol {
        body.extend(u16b(OPT_IF_TSRESOL, big));
        body.extend(u16b(1, big));
        body.extend([r, 0, 0, 0]);
        body.extend(u16b(OPT_END, big));
        body.extend(u16b(0, big));
    }
    block(big, PCAPNG_IDB, &body)
}

fn epb(big: bool, iface: u32, ts: u64, data: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(u32b(iface, big));
    body.extend(u32b((ts >> 32) as u32, big));
    body.extend(u32b(ts as u32, big));
    body.extend(u32b(data.len() as u32, big));
    body.extend(u32b(data.len() as u32, big));
    body.extend_from_slice(data);
    block(big, PCAPNG_EPB, &body)
}

/// (time, link type, bytes) of each frame read.
type Frames = Vec<(i64, LinkType, Vec<u8>)>;

fn read_all(bytes: &[u8]) -> (Frames, CaptureReader<&[u8]>) {
    let mut r = CaptureReader::new(bytes).expect("header must parse");
    let mut out = Vec::new();
    while let Some(f) = r.next_frame() {
        out.push((f.ts_ns, f.linktype, f.data.to_vec()));
    }
    (out, r)
}

#[test]
fn pcap_little_endian_microseconds() {
    let f = pcap(false, PCAP_MAGIC_MICRO, 101, &[(10, 5, &SYN)]);
    let (frames, r) = read_all(&f);
    assert_eq!(r.format(), Format::Pcap);
    assert_eq!(frames, vec![(10_000_005_000, LinkType::RAW, SYN.to_vec())]);
}

#[test]
fn pcap_big_endian_nanoseconds() {
    let f = pcap(
        true,
        PCAP_MAGIC_NANO,
        101,
        &[(10, 5, &SYN), (11, 0, &SYN[..20])],
    );
    let (frames, r) = read_all(&f);
    assert_eq!(frames.len(), 2);
    assert_eq!((frames[0].0, frames[1].0), (10_000_000_005, 11_000_000_000));
    assert!(r.warnings().is_empty());
}

#[test]
fn pcap_link_type_fcs_bits_are_ignored() {
    let f = pcap(false, PCAP_MAGIC_MICRO, 0x1000_0001, &[]);
    let r = CaptureReader::new(&f[..]).unwrap();
    assert_eq!(r.link_types(), vec![LinkType::ETHERNET]);
}

#[test]
fn pcap_unsupported_link_type_is_named() {
    let f = pcap(false, PCAP_MAGIC_MICRO, 105, &[]);
    let e = CaptureReader::new(&f[..]).err().unwrap();
    let msg = e.to_string();
    assert!(msg.contains("105") && msg.contains("Wi-Fi"), "{msg}");
    // `editcap -T` relabels frames; it must not be offered as a conversion.
    assert!(!msg.contains("convert with `editcap -T`"), "{msg}");
    assert!(msg.contains("only relabel"), "{msg}");
}

#[test]
fn pcap_wrong_major_version_is_rejected() {
    let mut f = pcap(false, PCAP_MAGIC_MICRO, 1, &[]);
    f[4] = 3;
    assert!(matches!(
        CaptureReader::new(&f[..]),
        Err(CaptureError::UnsupportedVersion { major: 3, .. })
    ));
}

#[test]
fn pcap_header_cut_short_is_an_error() {
    let f = pcap(false, PCAP_MAGIC_MICRO, 1, &[]);
    assert!(matches!(
        CaptureReader::new(&f[..20]),
        Err(CaptureError::TruncatedHeader { len: 20, .. })
    ));
}

#[test]
fn pcap_truncated_record_keeps_earlier_frames_and_warns() {
    let f = pcap(false, PCAP_MAGIC_MICRO, 101, &[(1, 0, &SYN), (2, 0, &SYN)]);
    let cut = &f[..f.len() - 5];
    let (frames, r) = read_all(cut);
    assert_eq!(frames.len(), 1);
    assert!(r.truncated());
    assert!(r.warnings()[0].contains("truncated"), "{:?}", r.warnings());
}

#[test]
fn pcap_truncated_record_header_warns() {
    let f = pcap(false, PCAP_MAGIC_MICRO, 101, &[(1, 0, &SYN)]);
    let mut cut = f.clone();
    cut.extend([0; 7]);
    let (frames, r) = read_all(&cut);
    assert_eq!(frames.len(), 1);
    assert!(r.truncated());
}

#[test]
fn pcap_absurd_captured_length_stops_with_warning() {
    let mut f = pcap(false, PCAP_MAGIC_MICRO, 101, &[(1, 0, &SYN)]);
    f.extend(1u32.to_le_bytes());
    f.extend(0u32.to_le_bytes());
    f.extend(0xffff_fff0u32.to_le_bytes());
    f.extend(40u32.to_le_bytes());
    let (frames, r) = read_all(&f);
    assert_eq!(frames.len(), 1);
    assert!(!r.truncated());
    assert!(r.warnings()[0].contains("corrupt"), "{:?}", r.warnings());
}

#[test]
fn text_file_is_not_a_capture_and_says_what_it_looks_like() {
    let e = CaptureReader::new(&b"GET / HTTP/1.1\r\nHost: x\r\n"[..])
        .err()
        .unwrap();
    let msg = e.to_string();
    assert!(msg.contains("47 45 54 20"), "{msg}");
    assert!(msg.contains("looks like text"), "{msg}");
    assert!(msg.contains("0a 0d 0d 0a"), "{msg}");
}

#[test]
fn gzip_file_is_not_a_capture_with_a_hint() {
    let e = CaptureReader::new(&[0x1f, 0x8b, 8, 0, 0, 0][..])
        .err()
        .unwrap();
    assert!(e.to_string().contains("gzip"));
}

#[test]
fn empty_file_is_called_empty_not_text() {
    let e = CaptureReader::new(&[][..]).err().unwrap();
    assert!(matches!(e, CaptureError::Empty), "{e}");
    assert!(e.to_string().contains("empty"), "{e}");
    assert!(!e.to_string().contains("looks like text"), "{e}");
}

#[test]
fn pcapng_little_endian_default_resolution_is_microseconds() {
    let mut f = shb(false);
    f.extend(idb(false, 101, None));
    f.extend(epb(false, 0, 1_500_000, &SYN));
    let (frames, r) = read_all(&f);
    assert_eq!(r.format(), Format::Pcapng);
    assert_eq!(frames, vec![(1_500_000_000, LinkType::RAW, SYN.to_vec())]);
}

#[test]
fn pcapng_big_endian_with_nanosecond_resolution() {
    let mut f = shb(true);
    f.extend(idb(true, 101, Some(9)));
    f.extend(epb(true, 0, 1_500_000, &SYN));
    let (frames, _) = read_all(&f);
    assert_eq!(frames[0].0, 1_500_000);
}

#[test]
fn pcapng_power_of_two_resolution() {
    let mut f = shb(false);
    f.extend(idb(false, 101, Some(0x80 | 10))); // 1/1024 s
    f.extend(epb(false, 0, 1024 * 3, &SYN));
    let (frames, _) = read_all(&f);
    assert_eq!(frames[0].0, 3_000_000_000);
}

#[test]
fn pcapng_if_tsoffset_is_added() {
    let mut body = Vec::new();
    body.extend(101u16.to_le_bytes());
    body.extend([0, 0, 0, 0, 0, 0]);
    body.extend(OPT_IF_TSOFFSET.to_le_bytes());
    body.extend(8u16.to_le_bytes());
    body.extend(100i64.to_le_bytes());
    let mut f = shb(false);
    f.extend(block(false, PCAPNG_IDB, &body));
    f.extend(epb(false, 0, 5, &SYN));
    let (frames, _) = read_all(&f);
    assert_eq!(frames[0].0, 100_000_005_000);
}

#[test]
fn pcapng_interfaces_keep_their_own_link_types() {
    let mut eth = vec![0u8; 12];
    eth.extend([0x08, 0x00]);
    eth.extend(SYN);
    let mut f = shb(false);
    f.extend(idb(false, 1, None));
    f.extend(idb(false, 101, None));
    f.extend(epb(false, 1, 1, &SYN));
    f.extend(epb(false, 0, 2, &eth));
    let (frames, r) = read_all(&f);
    assert_eq!(frames[0].1, LinkType::RAW);
    assert_eq!(frames[1].1, LinkType::ETHERNET);
    assert_eq!(r.link_types(), vec![LinkType::ETHERNET, LinkType::RAW]);
}

#[test]
fn pcapng_unknown_blocks_are_skipped() {
    let mut f = shb(false);
    f.extend(block(false, 0x0000_0bad, &[1, 2, 3, 4, 5]));
    f.extend(idb(false, 101, None));
    f.extend(block(false, 5, &[0; 32])); // interface statistics
    f.extend(epb(false, 0, 1, &SYN));
    let (frames, r) = read_all(&f);
    assert_eq!(frames.len(), 1);
    assert!(r.warnings().is_empty());
}

#[test]
fn pcapng_simple_packet_block_takes_last_time() {
    let mut spb = Vec::new();
    spb.extend(40u32.to_le_bytes());
    spb.extend(SYN);
    let mut f = shb(false);
    f.extend(idb(false, 101, None));
    f.extend(epb(false, 0, 7, &SYN));
    f.extend(block(false, PCAPNG_SPB, &spb));
    let (frames, _) = read_all(&f);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[1], (7_000, LinkType::RAW, SYN.to_vec()));
}

#[test]
fn pcapng_obsolete_packet_block_is_read() {
    let mut opb = Vec::new();
    opb.extend(0u16.to_le_bytes());
    opb.extend(0u16.to_le_bytes());
    opb.extend(0u32.to_le_bytes());
    opb.extend(9u32.to_le_bytes());
    opb.extend(40u32.to_le_bytes());
    opb.extend(40u32.to_le_bytes());
    opb.extend(SYN);
    let mut f = shb(false);
    f.extend(idb(false, 101, None));
    f.extend(block(false, PCAPNG_OPB, &opb));
    let (frames, _) = read_all(&f);
    assert_eq!(frames, vec![(9_000, LinkType::RAW, SYN.to_vec())]);
}

#[test]
fn pcapng_second_section_may_switch_byte_order() {
    let mut f = shb(false);
    f.extend(idb(false, 101, None));
    f.extend(epb(false, 0, 1, &SYN));
    f.extend(shb(true));
    f.extend(idb(true, 101, None));
    f.extend(epb(true, 0, 2, &SYN));
    let (frames, r) = read_all(&f);
    assert_eq!(frames.len(), 2, "{:?}", r.warnings());
    assert_eq!(frames[1].0, 2_000);
}

#[test]
fn pcapng_packet_before_any_interface_is_skipped_with_warning() {
    let mut f = shb(false);
    f.extend(epb(false, 0, 1, &SYN));
    f.extend(idb(false, 101, None));
    f.extend(epb(false, 0, 2, &SYN));
    let (frames, r) = read_all(&f);
    assert_eq!(frames.len(), 1);
    assert_eq!(r.bad_blocks(), 1);
    assert!(
        r.warnings()[0].contains("interface 0"),
        "{:?}",
        r.warnings()
    );
}

#[test]
fn pcapng_captured_length_past_block_end_is_skipped() {
    let mut bad = epb(false, 0, 1, &SYN);
    bad[20..24].copy_from_slice(&400u32.to_le_bytes());
    let mut f = shb(false);
    f.extend(idb(false, 101, None));
    f.extend(bad);
    f.extend(epb(false, 0, 2, &SYN));
    let (frames, r) = read_all(&f);
    assert_eq!(frames.len(), 1);
    assert_eq!(r.bad_blocks(), 1);
}

#[test]
fn pcapng_block_length_not_multiple_of_four_stops_with_warning() {
    let mut bad = epb(false, 0, 1, &SYN);
    bad[4..8].copy_from_slice(&67u32.to_le_bytes());
    let mut f = shb(false);
    f.extend(idb(false, 101, None));
    f.extend(epb(false, 0, 1, &SYN));
    f.extend(bad);
    let (frames, r) = read_all(&f);
    assert_eq!(frames.len(), 1);
    assert!(
        r.warnings()[0].contains("multiple of 4"),
        "{:?}",
        r.warnings()
    );
}

#[test]
fn pcapng_mismatched_trailing_length_stops_with_warning() {
    let mut bad = epb(false, 0, 1, &SYN);
    let n = bad.len();
    bad[n - 4..].copy_from_slice(&12u32.to_le_bytes());
    let mut f = shb(false);
    f.extend(idb(false, 101, None));
    f.extend(bad);
    let (frames, r) = read_all(&f);
    assert!(frames.is_empty());
    assert!(
        r.warnings()[0].contains("does not match"),
        "{:?}",
        r.warnings()
    );
}

#[test]
fn pcapng_truncated_block_warns() {
    let mut f = shb(false);
    f.extend(idb(false, 101, None));
    f.extend(epb(false, 0, 1, &SYN));
    f.extend(epb(false, 0, 2, &SYN));
    let (frames, r) = read_all(&f[..f.len() - 10]);
    assert_eq!(frames.len(), 1);
    assert!(r.truncated());
}

#[test]
fn pcapng_bad_byte_order_magic_is_an_error() {
    let mut f = shb(false);
    f[8..12].copy_from_slice(&[1, 2, 3, 4]);
    assert!(matches!(
        CaptureReader::new(&f[..]),
        Err(CaptureError::CorruptBlock { offset: 0, .. })
    ));
}

#[test]
fn pcapng_unsupported_interface_link_type_warns() {
    let mut f = shb(false);
    f.extend(idb(false, 105, None));
    f.extend(epb(false, 0, 1, &SYN));
    let (frames, r) = read_all(&f);
    assert_eq!(frames[0].1, LinkType(105));
    assert!(r.warnings()[0].contains("Wi-Fi"), "{:?}", r.warnings());
}

#[test]
fn frames_larger_than_the_buffer_are_read() {
    let big = vec![0x45u8; 5000];
    let f = pcap(false, PCAP_MAGIC_NANO, 101, &[(1, 0, &big), (2, 0, &SYN)]);
    let mut r = CaptureReader::with_capacity(&f[..], 256).unwrap();
    assert_eq!(r.next_frame().unwrap().data.len(), 5000);
    assert_eq!(r.next_frame().unwrap().data, &SYN[..]);
    assert!(r.next_frame().is_none());
}

#[test]
fn tsresol_conversions() {
    assert_eq!(TsScale::from_tsresol(6).to_ns(1), 1_000);
    assert_eq!(TsScale::from_tsresol(9).to_ns(1), 1);
    assert_eq!(TsScale::from_tsresol(12).to_ns(5_000), 5);
    assert_eq!(TsScale::from_tsresol(127).to_ns(u64::MAX), 0);
    assert_eq!(TsScale::from_tsresol(0x80).to_ns(2), 2_000_000_000);
    assert_eq!(TsScale::from_tsresol(0xff).to_ns(u64::MAX), 0);
}

#[test]
fn every_prefix_of_a_pcapng_file_is_handled_without_panic() {
    let mut f = shb(false);
    f.extend(idb(false, 101, Some(9)));
    f.extend(epb(false, 0, 1, &SYN));
    f.extend(epb(false, 0, 2, &SYN));
    for n in 0..f.len() {
        if let Ok(mut r) = CaptureReader::new(&f[..n]) {
            while r.next_frame().is_some() {}
        }
    }
}
