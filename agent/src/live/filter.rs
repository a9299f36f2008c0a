//! Capture filters (tcpdump syntax) that keep what proves a verdict.
//!
//! Copying every packet costs the proxy throughput (`tcpdump` writing a file cost a busy
//! proxy about a fifth of its throughput early on; docs/benchmarks.md). What proves a verdict is the SYN/FIN/RST segments and the
//! segments that begin an HTTP message; body bytes are accounted from sequence numbers.

/// The first four payload bytes of every TCP segment, as a BPF expression.
const PAYLOAD_WORD: &str = "tcp[((tcp[12] & 0xf0) >> 2):4]";

/// Keeps SYN, FIN and RST segments and those whose payload starts an HTTP/1.x message
/// (a response `HTTP`, or a request `GET `, `POST`, `PUT `, `HEAD`, `DELE`, `PATC`, `OPTI`).
#[must_use]
pub fn http_heads_filter(ports: &[u16]) -> String {
    // ASCII of the first four bytes, big-endian.
    const STARTS: [(&str, u32); 8] = [
        ("HTTP", 0x4854_5450),
        ("GET ", 0x4745_5420),
        ("POST", 0x504f_5354),
        ("PUT ", 0x5055_5420),
        ("HEAD", 0x4845_4144),
        ("DELE", 0x4445_4c45),
        ("PATC", 0x5041_5443),
        ("OPTI", 0x4f50_5449),
    ];
    let heads: Vec<String> = STARTS
        .iter()
        .map(|(_, w)| format!("{PAYLOAD_WORD} = 0x{w:08x}"))
        .collect();
    let base = format!(
        "tcp and (tcp[tcpflags] & (tcp-syn|tcp-fin|tcp-rst) != 0 or {})",
        heads.join(" or ")
    );
    with_ports(&base, ports)
}

/// Every TCP segment that carries data or SYN/FIN/RST (optionally of some ports): pure
/// ACKs, about half of a busy proxy's packets, prove nothing the engine needs — the bytes
/// they acknowledge are accounted from the data segments' sequence numbers.
#[must_use]
pub fn default_filter(ports: &[u16]) -> String {
    const HAS_PAYLOAD: &str =
        "(ip and ip[2:2] - ((ip[0] & 0xf) << 2) - ((tcp[12] & 0xf0) >> 2) != 0) \
                               or (ip6 and ip6[4:2] - ((tcp[12] & 0xf0) >> 2) != 0)";
    with_ports(
        &format!("tcp and (tcp[tcpflags] & (tcp-syn|tcp-fin|tcp-rst) != 0 or {HAS_PAYLOAD})"),
        ports,
    )
}

/// Every TCP segment, pure ACKs too.
#[must_use]
pub fn full_filter(ports: &[u16]) -> String {
    with_ports("tcp", ports)
}

fn with_ports(base: &str, ports: &[u16]) -> String {
    if ports.is_empty() {
        return base.to_owned();
    }
    let p: Vec<String> = ports.iter().map(|p| format!("port {p}")).collect();
    format!("({base}) and ({})", p.join(" or "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_filter_keeps_control_segments_and_message_starts() {
        let f = http_heads_filter(&[]);
        assert!(f.starts_with("tcp and (tcp[tcpflags] & (tcp-syn|tcp-fin|tcp-rst) != 0"));
        assert!(f.contains("= 0x48545450"), "HTTP"); // response
        assert!(f.contains("= 0x504f5354"), "POST");
    }

    #[test]
    fn ports_restrict_either_filter() {
        assert_eq!(full_filter(&[80, 8080]), "(tcp) and (port 80 or port 8080)");
        assert!(default_filter(&[80]).ends_with(") and (port 80)"));
        assert!(http_heads_filter(&[80]).ends_with("and (port 80)"));
    }
}
