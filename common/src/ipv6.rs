//! IPv6 extension headers: which next-header values can be walked to the transport
//! header and how long each is. One definition for the capture decoder (userspace) and
//! the kernel's `select` filter.

pub const HOP_BY_HOP: u8 = 0;
pub const ROUTING: u8 = 43;
pub const FRAGMENT: u8 = 44;
pub const ESP: u8 = 50;
pub const AH: u8 = 51;
pub const NO_NEXT: u8 = 59;
pub const DEST_OPTS: u8 = 60;
pub const MOBILITY: u8 = 135;
pub const HIP: u8 = 139;
pub const SHIM6: u8 = 140;

/// Whether `kind` is an extension header that can be walked past.
#[inline(always)]
pub fn is_extension(kind: u8) -> bool {
    matches!(
        kind,
        HOP_BY_HOP | ROUTING | FRAGMENT | AH | DEST_OPTS | MOBILITY | HIP | SHIM6
    )
}

/// Whether `kind` hides what follows it (ESP, "no next header").
#[inline(always)]
pub fn is_opaque(kind: u8) -> bool {
    matches!(kind, ESP | NO_NEXT)
}

/// One step of the walk to the transport header: given an extension header of type
/// `kind` and its first four bytes, the type of the header after it and its own length in
/// bytes. `None` for a fragment after the first (no transport header follows) and for a
/// `kind` that is no walkable extension header.
#[inline(always)]
pub fn extension(kind: u8, head: [u8; 4]) -> Option<(u8, u32)> {
    let len = match kind {
        HOP_BY_HOP | ROUTING | DEST_OPTS | MOBILITY | HIP | SHIM6 => (u32::from(head[1]) + 1) * 8,
        FRAGMENT => {
            // the fragment offset, in 8-byte units, in the top 13 bits of bytes 2-3
            if u16::from_be_bytes([head[2], head[3]]) >> 3 != 0 {
                return None;
            }
            8
        }
        AH => (u32::from(head[1]) + 2) * 4,
        _ => return None,
    };
    Some((head[0], len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_headers_are_walked_to_tcp() {
        // hop-by-hop, 8 bytes, then TCP
        assert_eq!(extension(0, [6, 0, 1, 4]), Some((6, 8)));
        // destination options of 24 bytes, then routing
        assert_eq!(extension(60, [43, 2, 0, 0]), Some((43, 24)));
        // AH counts 4-byte units, minus 2
        assert_eq!(extension(51, [6, 4, 0, 0]), Some((6, 24)));
        // the first fragment (offset 0, more fragments) has the TCP header; later ones not
        assert_eq!(extension(44, [6, 0, 0, 1]), Some((6, 8)));
        assert_eq!(extension(44, [6, 0, 0, 0x08]), None);
        // ESP hides the rest; UDP is no extension header
        assert_eq!(extension(50, [6, 0, 0, 0]), None);
        assert_eq!(extension(17, [0, 0, 0, 0]), None);
        assert!(is_extension(44) && !is_extension(6) && !is_extension(50));
        assert!(is_opaque(50) && is_opaque(59) && !is_opaque(0));
    }
}
