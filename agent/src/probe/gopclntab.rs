//! Go's function table (`.gopclntab`): where a function begins and ends in a Go binary,
//! stripped or not, and where it returns.
//!
//! Go keeps this table for its own stack traces, so even a stripped binary (Debian's caddy)
//! names every function. Layout of Go 1.18 and later (`runtime/symtab.go`, `pcHeader`): a
//! header, then at `pclnOffset` a table of `nfunc + 1` pairs `(entryoff, funcoff)` of `u32`
//! (the last entry's `entryoff` is the end of the text), each `funcoff` pointing at a
//! `_func` record whose second field is the offset of its name in the name table. Older Go
//! passed arguments on the stack, not in registers, so the probe cannot read them there:
//! such binaries are refused.
//!
//! Uprobes in a Go binary go on function entries and on `RET` instructions, never on return
//! addresses (a return probe rewrites the return address on the goroutine's stack, which Go
//! copies when the stack grows and inspects when it unwinds: the process crashes).

/// `pcHeader.magic` of Go 1.18 and 1.19.
const MAGIC_118: u32 = 0xFFFF_FFF0;
/// `pcHeader.magic` of Go 1.20 and later.
const MAGIC_120: u32 = 0xFFFF_FFF1;
/// Magics of Go 1.2 to 1.15 and of 1.16 and 1.17: a layout without `textStart`, and (up to
/// 1.16) arguments on the stack.
const MAGIC_OLD: [u32; 2] = [0xFFFF_FFFB, 0xFFFF_FFFA];

/// Why a function table could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GoError {
    /// The table is shorter than its header says.
    #[error("the Go function table is cut short ({0})")]
    Truncated(&'static str),
    /// Not a function table Go 1.18 or later writes.
    #[error("not a Go 1.18+ function table (magic {0:#x})")]
    BadMagic(u32),
    /// A Go release before 1.18: its functions take their arguments on the stack.
    #[error("built by Go before 1.18 (magic {0:#x}), whose calls pass arguments on the stack: the probe reads them from registers")]
    TooOld(u32),
    /// Only 64-bit x86 is supported.
    #[error("a {0}-byte pointer, {1}-byte instruction Go binary: only x86-64 is supported")]
    Arch(u8, u8),
    /// The binary has no function of that name.
    #[error("no Go function `{0}` in the binary")]
    NoFunction(String),
    /// The function's code could not be decoded.
    #[error("cannot decode the code of `{0}` at {1:#x}")]
    Code(String, u64),
}

/// One Go function: `[entry, end)` in virtual addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoFunc {
    pub entry: u64,
    pub end: u64,
}

/// A parsed `.gopclntab`.
#[derive(Debug)]
pub struct PcLnTab<'a> {
    data: &'a [u8],
    nfunc: usize,
    text_start: u64,
    funcname: usize,
    functab: usize,
}

fn u32_at(d: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        d.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(d: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        d.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

impl<'a> PcLnTab<'a> {
    /// Parses the section's bytes. `text_section` is the address of `.text`, used when the
    /// header's `textStart` is 0 (position-independent binaries leave it to a relocation).
    pub fn parse(data: &'a [u8], text_section: u64) -> Result<Self, GoError> {
        let magic = u32_at(data, 0).ok_or(GoError::Truncated("header"))?;
        if MAGIC_OLD.contains(&magic) {
            return Err(GoError::TooOld(magic));
        }
        if magic != MAGIC_118 && magic != MAGIC_120 {
            return Err(GoError::BadMagic(magic));
        }
        let (min_lc, ptr) = match data.get(6..8) {
            Some(&[m, p]) => (m, p),
            _ => return Err(GoError::Truncated("header")),
        };
        if min_lc != 1 || ptr != 8 {
            return Err(GoError::Arch(ptr, min_lc));
        }
        let word = |i: usize| u64_at(data, 8 + 8 * i).ok_or(GoError::Truncated("header"));
        let nfunc = usize::try_from(word(0)?).map_err(|_| GoError::Truncated("nfunc"))?;
        let text_start = match word(2)? {
            0 => text_section,
            t => t,
        };
        let funcname = usize::try_from(word(3)?).map_err(|_| GoError::Truncated("names"))?;
        let functab = usize::try_from(word(7)?).map_err(|_| GoError::Truncated("functab"))?;
        let end = nfunc
            .checked_add(1)
            .and_then(|n| n.checked_mul(8))
            .and_then(|n| n.checked_add(functab))
            .ok_or(GoError::Truncated("functab"))?;
        if end > data.len() || funcname > data.len() {
            return Err(GoError::Truncated("functab"));
        }
        Ok(Self {
            data,
            nfunc,
            text_start,
            funcname,
            functab,
        })
    }

    /// Functions in the table.
    pub fn len(&self) -> usize {
        self.nfunc
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.nfunc == 0
    }

    /// Function `i`'s name and extent.
    fn func(&self, i: usize) -> Option<(&'a [u8], GoFunc)> {
        let at = self.functab + 8 * i;
        let entry = u32_at(self.data, at)?;
        let funcoff = usize::try_from(u32_at(self.data, at + 4)?).ok()?;
        let next = u32_at(self.data, at + 8)?;
        let record = self.functab.checked_add(funcoff)?;
        let nameoff = usize::try_from(u32_at(self.data, record + 4)?).ok()?;
        let name_at = self.funcname.checked_add(nameoff)?;
        let rest = self.data.get(name_at..)?;
        let name = &rest[..rest.iter().position(|&b| b == 0)?];
        Some((
            name,
            GoFunc {
                entry: self.text_start + u64::from(entry),
                end: self.text_start + u64::from(next),
            },
        ))
    }

    /// The function called `name` (as Go spells it: `crypto/tls.(*Conn).Write`).
    pub fn find(&self, name: &str) -> Result<GoFunc, GoError> {
        (0..self.nfunc)
            .filter_map(|i| self.func(i))
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, f)| f)
            .ok_or_else(|| GoError::NoFunction(name.to_owned()))
    }
}

/// The addresses of the `RET` instructions in `code`, which starts at `address`: where a
/// function's entry probes can stand in for return probes. The whole range must decode (a
/// probe in the middle of an instruction would corrupt the program); Go pads between
/// functions with `INT3`, which decodes too.
pub fn ret_sites(name: &str, code: &[u8], address: u64) -> Result<Vec<u64>, GoError> {
    use iced_x86::{Decoder, DecoderOptions, Mnemonic};
    let mut d = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut rets = Vec::new();
    while d.can_decode() {
        let ins = d.decode();
        if ins.is_invalid() {
            return Err(GoError::Code(name.to_owned(), ins.ip()));
        }
        if ins.mnemonic() == Mnemonic::Ret {
            rets.push(ins.ip());
        }
    }
    Ok(rets)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table in Go 1.20's layout with three functions, built by hand.
    fn table() -> Vec<u8> {
        let mut d = vec![0u8; 8 + 8 * 8];
        d[..4].copy_from_slice(&MAGIC_120.to_le_bytes());
        d[6] = 1;
        d[7] = 8;
        let names = b"main.main\0crypto/tls.(*Conn).Write\0runtime.goexit\0";
        let funcname = d.len();
        d.extend_from_slice(names);
        let functab = d.len();
        // (entryoff, funcoff) × 3, then the end; the _func records follow.
        let records = 4 * 8;
        let name_offs = [0u32, 10, 35];
        for (i, entry) in [0u32, 0x40, 0x100].iter().enumerate() {
            d.extend_from_slice(&entry.to_le_bytes());
            d.extend_from_slice(&(records + 8 * i as u32).to_le_bytes());
        }
        d.extend_from_slice(&0x180u32.to_le_bytes());
        d.extend_from_slice(&0u32.to_le_bytes());
        for (i, off) in name_offs.iter().enumerate() {
            d.extend_from_slice(&[0x00, 0x40, 0x00, 0x00][..]); // entryoff (unused here)
            let _ = i;
            d.extend_from_slice(&off.to_le_bytes());
        }
        let header = [3u64, 1, 0x40_1000, funcname as u64, 0, 0, 0, functab as u64];
        for (i, w) in header.iter().enumerate() {
            d[8 + 8 * i..16 + 8 * i].copy_from_slice(&w.to_le_bytes());
        }
        d
    }

    #[test]
    fn a_function_spans_from_its_entry_to_the_next_one() {
        let d = table();
        let t = PcLnTab::parse(&d, 0).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(
            t.find("crypto/tls.(*Conn).Write"),
            Ok(GoFunc {
                entry: 0x40_1040,
                end: 0x40_1100
            })
        );
        assert_eq!(t.find("runtime.goexit").unwrap().end, 0x40_1180);
        assert_eq!(
            t.find("crypto/tls.(*Conn).Read"),
            Err(GoError::NoFunction("crypto/tls.(*Conn).Read".into()))
        );
    }

    #[test]
    fn a_relocated_text_start_falls_back_to_the_text_section() {
        let mut d = table();
        d[24..32].copy_from_slice(&0u64.to_le_bytes());
        let t = PcLnTab::parse(&d, 0x9000).unwrap();
        assert_eq!(t.find("main.main").unwrap().entry, 0x9000);
    }

    #[test]
    fn old_go_and_other_bytes_are_refused() {
        let mut d = table();
        d[..4].copy_from_slice(&0xFFFF_FFFAu32.to_le_bytes());
        assert_eq!(
            PcLnTab::parse(&d, 0).unwrap_err(),
            GoError::TooOld(0xFFFF_FFFA)
        );
        assert!(matches!(
            PcLnTab::parse(b"\x7fELF", 0),
            Err(GoError::BadMagic(_))
        ));
        let mut d = table();
        d.truncate(40);
        assert!(matches!(PcLnTab::parse(&d, 0), Err(GoError::Truncated(_))));
    }

    #[test]
    fn ret_sites_are_instruction_starts_not_c3_bytes() {
        // mov eax, 0xc3; ret; int3 int3 — the first c3 is an immediate, not a RET.
        let code = [0xb8, 0xc3, 0x00, 0x00, 0x00, 0xc3, 0xcc, 0xcc];
        assert_eq!(ret_sites("f", &code, 0x1000), Ok(vec![0x1005]));
        // An instruction cut short at the end of the range is refused.
        assert!(ret_sites("f", &[0xb8, 0x01], 0x1000).is_err());
    }

    /// Debian's caddy: a stripped Go binary that keeps its function table.
    #[test]
    fn debians_caddy_names_the_tls_calls_and_read_returns_somewhere() {
        let Some(data) =
            crate::probe::installed::program("caddy", "caddy").and_then(|p| std::fs::read(p).ok())
        else {
            return;
        };
        let elf = super::super::elf::Elf::parse(&data).unwrap();
        let (tab, _) = elf.section(".gopclntab").expect(".gopclntab");
        let text = elf.section(".text").map_or(0, |(_, a)| a);
        let t = PcLnTab::parse(tab, text).unwrap();
        assert!(t.len() > 10_000, "{} functions", t.len());
        for name in [
            "crypto/tls.(*Conn).Write",
            "crypto/tls.(*Conn).Read",
            "crypto/tls.(*Conn).flush",
        ] {
            let f = t.find(name).unwrap();
            assert!(
                f.entry < f.end && f.end - f.entry < 64 * 1024,
                "{name}: {f:?}"
            );
            let code = elf.bytes_at(f.entry, f.end - f.entry).unwrap();
            // Go's prologue compares the stack pointer (or, for a large frame, what it will
            // be) with the goroutine's stack guard, read through R14: `cmp reg, [r14+0x10]`.
            assert!(
                code[..12].windows(3).any(|w| w == [0x3b, 0x66, 0x10]),
                "{name}: {:02x?}",
                &code[..12]
            );
            let rets = ret_sites(name, code, f.entry).unwrap();
            assert!(!rets.is_empty(), "{name} returns somewhere");
            assert!(rets.iter().all(|&r| code[(r - f.entry) as usize] == 0xc3));
        }
    }
}
