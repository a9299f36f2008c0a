//! Just enough of a BTF reader for what the probe needs of the running kernel without
//! CO-RE (which aya-ebpf does not do for Rust): two struct member offsets, `skc_net` in
//! `struct sock` and `ns.inum` in `struct net`, to read each socket's network namespace;
//! and the prototypes of the raw tracepoints it attaches, which it reads by position.
//!
//! Bounds are checked on every read: a malformed blob gives an error, never a panic.

/// Where the kernel exposes its own BTF.
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_TYPE_TAG: u32 = 18;

#[derive(Debug, Clone, Copy)]
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
}

#[derive(Debug, Clone)]
struct Type {
    kind: u32,
    name_off: u32,
    /// The referenced type for typedef/const/volatile/…, else the size.
    size_or_type: u32,
    /// A struct's or union's members, or a function prototype's parameters (offset 0).
    members: Vec<Member>,
}

/// A parsed BTF blob: types (index = id - 1) and the string section.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl Btf {
    /// Parses a little-endian BTF blob.
    pub fn parse(b: &[u8]) -> Result<Self, String> {
        let magic = b.get(0..2).map(|m| u16::from_le_bytes([m[0], m[1]]));
        if magic != Some(BTF_MAGIC) {
            return Err("not a little-endian BTF blob (bad magic)".into());
        }
        let field = |off| {
            u32_at(b, off)
                .map(|v| v as usize)
                .ok_or("BTF header is truncated")
        };
        let hdr_len = field(4)?;
        let (type_off, type_len) = (field(8)?, field(12)?);
        let (str_off, str_len) = (field(16)?, field(20)?);
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off)?;
            b.get(start..start.checked_add(len)?)
        };
        let types_raw = section(type_off, type_len).ok_or("BTF type section out of bounds")?;
        let strings = section(str_off, str_len)
            .ok_or("BTF string section out of bounds")?
            .to_vec();

        let mut types = Vec::new();
        let mut p = 0usize;
        while p < types_raw.len() {
            let name_off = u32_at(types_raw, p).ok_or_else(|| truncated(types.len()))?;
            let info = u32_at(types_raw, p + 4).ok_or_else(|| truncated(types.len()))?;
            let size_or_type = u32_at(types_raw, p + 8).ok_or_else(|| truncated(types.len()))?;
            p += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match kind {
                1 | 14 | 17 => 4, // INT, VAR, DECL_TAG
                3 => 12,          // ARRAY
                // A member: name, type, then (structs and unions only) its offset; a
                // prototype's parameter: name, type.
                KIND_STRUCT | KIND_UNION | KIND_FUNC_PROTO => {
                    let stride = if kind == KIND_FUNC_PROTO { 8 } else { 12 };
                    for i in 0..vlen {
                        let m = p + i * stride;
                        let at =
                            |off| u32_at(types_raw, m + off).ok_or_else(|| truncated(types.len()));
                        let bit_offset = if kind == KIND_FUNC_PROTO {
                            0
                        } else if kind_flag {
                            at(8)? & 0x00ff_ffff
                        } else {
                            at(8)?
                        };
                        members.push(Member {
                            name_off: at(0)?,
                            type_id: at(4)?,
                            bit_offset,
                        });
                    }
                    stride * vlen
                }
                6 => 8 * vlen,                 // ENUM
                15 | 19 => 12 * vlen,          // DATASEC, ENUM64
                0 | 2 | 7..=12 | 16 | 18 => 0, // no trailing data
                other => return Err(format!("unknown BTF kind {other}")),
            };
            p = p.checked_add(extra).ok_or_else(|| truncated(types.len()))?;
            if p > types_raw.len() {
                return Err(truncated(types.len()));
            }
            types.push(Type {
                kind,
                name_off,
                size_or_type,
                members,
            });
        }
        Ok(Self { types, strings })
    }

    fn name(&self, off: u32) -> &[u8] {
        let start = off as usize;
        let Some(rest) = self.strings.get(start..) else {
            return b"";
        };
        let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    fn get(&self, id: u32) -> Option<&Type> {
        self.types.get((id as usize).checked_sub(1)?)
    }

    /// Follows typedef/const/volatile/restrict/type_tag to the underlying type id.
    fn resolve(&self, mut id: u32) -> Option<u32> {
        for _ in 0..32 {
            let t = self.get(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type;
                }
                _ => return Some(id),
            }
        }
        None
    }

    /// The id of the type of `kind` named `name`.
    fn type_id(&self, kind: u32, name: &str) -> Option<u32> {
        self.types
            .iter()
            .position(|t| t.kind == kind && self.name(t.name_off) == name.as_bytes())
            .and_then(|i| u32::try_from(i + 1).ok())
    }

    /// (bit offset, type id) of member `name` in struct/union `id`, looking into anonymous
    /// members too.
    fn member(&self, id: u32, name: &str, depth: u32) -> Option<(u32, u32)> {
        if depth > 8 {
            return None;
        }
        let t = self.get(self.resolve(id)?)?;
        for m in &t.members {
            if self.name(m.name_off) == name.as_bytes() {
                return Some((m.bit_offset, m.type_id));
            }
        }
        for m in t.members.iter().filter(|m| m.name_off == 0) {
            if let Some((off, ty)) = self.member(m.type_id, name, depth + 1) {
                return Some((m.bit_offset + off, ty));
            }
        }
        None
    }

    /// Byte offset of a member path (`["__sk_common", "skc_net"]`) in struct `root`.
    pub fn offset_of(&self, root: &str, path: &[&str]) -> Result<u32, String> {
        let mut id = self
            .type_id(KIND_STRUCT, root)
            .ok_or_else(|| format!("the kernel BTF has no struct {root}"))?;
        let mut bits = 0u32;
        for field in path {
            let (off, ty) = self
                .member(id, field, 0)
                .ok_or_else(|| format!("struct {root} has no member {}", path.join(".")))?;
            bits = bits.saturating_add(off);
            id = ty;
        }
        if !bits.is_multiple_of(8) {
            return Err(format!("{root}.{} is a bitfield", path.join(".")));
        }
        Ok(bits / 8)
    }

    /// A type in C spelling, enough to compare prototypes: `int`, `struct sock *`, `void *`
    /// (qualifiers are dropped, typedefs keep their name).
    fn spell(&self, id: u32, depth: u32) -> String {
        if id == 0 {
            return "void".into();
        }
        let Some(t) = self.get(id).filter(|_| depth < 16) else {
            return "?".into();
        };
        let name = String::from_utf8_lossy(self.name(t.name_off)).into_owned();
        match t.kind {
            KIND_PTR => format!("{} *", self.spell(t.size_or_type, depth + 1)),
            KIND_STRUCT => format!("struct {name}"),
            KIND_UNION => format!("union {name}"),
            KIND_CONST | KIND_VOLATILE | KIND_RESTRICT | KIND_TYPE_TAG => {
                self.spell(t.size_or_type, depth + 1)
            }
            KIND_INT | KIND_TYPEDEF => name,
            _ => format!("{name}?"),
        }
    }

    /// The `TP_PROTO` arguments of raw tracepoint `event`, in C spelling, from the
    /// kernel's `btf_trace_<event>` typedef (a pointer to a prototype whose first
    /// parameter is the tracepoint's private data, not an argument).
    pub fn raw_tracepoint_args(&self, event: &str) -> Result<Vec<String>, String> {
        let typedef = format!("btf_trace_{event}");
        let id = self
            .type_id(KIND_TYPEDEF, &typedef)
            .ok_or_else(|| format!("the kernel BTF has no {typedef}"))?;
        let ptr = self
            .resolve(id)
            .and_then(|id| self.get(id))
            .filter(|t| t.kind == KIND_PTR);
        let proto = ptr
            .and_then(|p| self.get(p.size_or_type))
            .filter(|t| t.kind == KIND_FUNC_PROTO)
            .ok_or_else(|| format!("{typedef} is not a pointer to a function prototype"))?;
        Ok(proto
            .members
            .iter()
            .skip(1)
            .map(|m| self.spell(m.type_id, 0))
            .collect())
    }
}

/// Why the running kernel's BTF cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelBtfError {
    /// The file is not there or not readable (a kernel built without BTF).
    Unreadable(String),
    /// It is there but does not parse.
    Malformed(String),
}

impl std::fmt::Display for KernelBtfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreadable(why) | Self::Malformed(why) => f.write_str(why),
        }
    }
}

/// The running kernel's BTF, read and parsed once for every check a load makes (it is
/// megabytes).
pub fn kernel() -> Result<Btf, KernelBtfError> {
    let blob = std::fs::read(VMLINUX_BTF)
        .map_err(|e| KernelBtfError::Unreadable(format!("reading {VMLINUX_BTF}: {e}")))?;
    Btf::parse(&blob).map_err(KernelBtfError::Malformed)
}

/// Checks that each raw tracepoint the probe attaches passes the arguments its program
/// reads (`tracer_common::Tracepoint::args`) on the running kernel (`btf`, from
/// [`kernel`]). `Err` when a prototype differs or the BTF is malformed; `Ok(Some(why))`
/// when there is no BTF to read, so the check could not run.
pub fn verify_raw_tracepoints(btf: &Result<Btf, KernelBtfError>) -> Result<Option<String>, String> {
    let btf = match btf {
        Ok(b) => b,
        Err(KernelBtfError::Unreadable(why)) => return Ok(Some(why.clone())),
        Err(KernelBtfError::Malformed(e)) => return Err(e.clone()),
    };
    for tp in tracer_common::TRACEPOINTS.iter().filter(|t| t.raw) {
        let found = btf.raw_tracepoint_args(tp.event)?;
        if found != tp.args {
            return Err(format!(
                "raw tracepoint {}:{} passes ({}) on this kernel, the probe reads ({}): rebuild tracer for this kernel",
                tp.category,
                tp.event,
                found.join(", "),
                tp.args.join(", ")
            ));
        }
    }
    Ok(None)
}

fn truncated(index: usize) -> String {
    format!("BTF type {} is truncated", index + 1)
}

/// `(offset of skc_net in struct sock, offset of ns.inum in struct net)` for the running
/// kernel (`btf`, from [`kernel`]); `Err` says why not.
pub fn netns_offsets(btf: &Result<Btf, KernelBtfError>) -> Result<(u32, u32), String> {
    let btf = btf.as_ref().map_err(ToString::to_string)?;
    let sk_net = btf.offset_of("sock", &["__sk_common", "skc_net"])?;
    let inum = btf.offset_of("net", &["ns", "inum"])?;
    Ok((sk_net, inum))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob: a string section, then type entries added in id order.
    struct Blob {
        strings: &'static [u8],
        types: Vec<u8>,
    }

    impl Blob {
        fn new(strings: &'static [u8]) -> Self {
            Self {
                strings,
                types: Vec::new(),
            }
        }

        /// Offset of `name` in the string section.
        fn s(&self, name: &str) -> u32 {
            let needle = [b"\0", name.as_bytes(), b"\0"].concat();
            let at = self
                .strings
                .windows(needle.len())
                .position(|w| w == needle.as_slice())
                .unwrap();
            at as u32 + 1
        }

        /// Adds the next type: name offset, info word, size or type, trailing words.
        fn ty(&mut self, name: u32, info: u32, size: u32, extra: &[u32]) {
            for v in [name, info, size].iter().chain(extra) {
                self.types.extend_from_slice(&v.to_le_bytes());
            }
        }

        fn finish(self) -> Vec<u8> {
            let t = self.types;
            let mut b = Vec::new();
            b.extend_from_slice(&BTF_MAGIC.to_le_bytes());
            b.extend_from_slice(&[1, 0]);
            for v in [
                24u32,
                0,
                t.len() as u32,
                t.len() as u32,
                self.strings.len() as u32,
            ] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(&t);
            b.extend_from_slice(self.strings);
            b
        }
    }

    /// struct outer { int a; struct { int b; }; struct inner in; }.
    fn blob() -> Vec<u8> {
        let mut b = Blob::new(b"\0int\0a\0b\0outer\0in\0inner\0c\0");
        let (int, a, bb, c) = (b.s("int"), b.s("a"), b.s("b"), b.s("c"));
        let (inner, outer, inn) = (b.s("inner"), b.s("outer"), b.s("in"));
        // 1: int (INT, 4 bytes, encoding word)
        b.ty(int, 1 << 24, 4, &[32]);
        // 2: anonymous struct { int b; } at bit 0
        b.ty(0, (KIND_STRUCT << 24) | 1, 4, &[bb, 1, 0]);
        // 3: struct inner { int c; }
        b.ty(inner, (KIND_STRUCT << 24) | 1, 4, &[c, 1, 0]);
        // 4: const struct inner
        b.ty(0, KIND_CONST << 24, 3, &[]);
        // 5: struct outer { int a; <anon 2> at 32; const inner in at 64 }
        b.ty(
            outer,
            (KIND_STRUCT << 24) | 3,
            12,
            &[a, 1, 0, 0, 2, 32, inn, 4, 64],
        );
        b.finish()
    }

    #[test]
    fn member_paths_through_anonymous_and_const_types() {
        let btf = Btf::parse(&blob()).unwrap();
        assert_eq!(btf.offset_of("outer", &["a"]).unwrap(), 0);
        assert_eq!(btf.offset_of("outer", &["b"]).unwrap(), 4);
        assert_eq!(btf.offset_of("outer", &["in", "c"]).unwrap(), 8);
        assert!(btf.offset_of("outer", &["nope"]).is_err());
        assert!(btf.offset_of("missing", &["a"]).is_err());
    }

    #[test]
    fn truncated_blobs_are_errors() {
        let b = blob();
        for len in [0, 3, 23, 30, b.len() - 1] {
            assert!(Btf::parse(&b[..len]).is_err(), "len {len}");
        }
    }

    /// A blob with `typedef void (*btf_trace_ev)(void *, struct sock *, int)`.
    fn proto_blob() -> Vec<u8> {
        let mut b = Blob::new(b"\0int\0sock\0btf_trace_ev\0__data\0sk\0ret\0");
        let (int, sock, ev) = (b.s("int"), b.s("sock"), b.s("btf_trace_ev"));
        let (data, sk, ret) = (b.s("__data"), b.s("sk"), b.s("ret"));
        b.ty(int, KIND_INT << 24, 4, &[32]); // 1: int
        b.ty(sock, KIND_STRUCT << 24, 0, &[]); // 2: struct sock (no members)
        b.ty(0, KIND_PTR << 24, 2, &[]); // 3: struct sock *
        b.ty(0, KIND_PTR << 24, 0, &[]); // 4: void *
        b.ty(0, KIND_CONST << 24, 1, &[]); // 5: const int
        b.ty(0, (KIND_FUNC_PROTO << 24) | 3, 0, &[data, 4, sk, 3, ret, 5]); // 6: void (void *, struct sock *, const int)
        b.ty(0, KIND_PTR << 24, 6, &[]); // 7: pointer to 6
        b.ty(ev, KIND_TYPEDEF << 24, 7, &[]); // 8
        b.finish()
    }

    #[test]
    fn raw_tracepoint_prototypes_skip_the_private_data_and_spell_c_types() {
        let btf = Btf::parse(&proto_blob()).unwrap();
        assert_eq!(
            btf.raw_tracepoint_args("ev").unwrap(),
            ["struct sock *", "int"]
        );
        assert!(btf.raw_tracepoint_args("other").is_err());
    }

    #[test]
    fn running_kernel_raw_tracepoints_match_when_btf_is_present() {
        match verify_raw_tracepoints(&kernel()) {
            Ok(None) => {}
            Ok(Some(why)) => eprintln!("skipped: {why}"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn running_kernel_offsets_when_btf_is_present() {
        match netns_offsets(&kernel()) {
            Ok((sk_net, inum)) => assert!(sk_net > 0 && inum > 0),
            Err(e) => eprintln!("skipped: {e}"),
        }
    }
}
