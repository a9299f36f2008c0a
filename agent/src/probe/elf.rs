//! Where a function lives in an ELF file, as the file offset a uprobe is attached at.
//!
//! Shared libraries (OpenSSL's `libssl.so.3`) export their functions in the dynamic symbol
//! table; a stripped Go binary has no symbols at all, but keeps its function table in
//! `.gopclntab` (see [`super::gopclntab`]). Either way the kernel wants a file offset: the
//! symbol's virtual address, less its section's address, plus the section's file offset.

use object::{Object, ObjectSection, ObjectSymbol};

/// Why a function could not be located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    /// The bytes are not an ELF file this reader understands.
    #[error("not a readable ELF file: {0}")]
    Parse(String),
    /// No symbol of that name is defined in the file.
    #[error("no function `{0}` is defined in the file's symbols")]
    NoSymbol(String),
    /// The address lies in no section that occupies file bytes.
    #[error("address {0:#x} lies in no section of the file")]
    NotInFile(u64),
}

/// One function's place in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    /// Virtual address (link time).
    pub address: u64,
    /// Offset in the file: what a uprobe is attached at.
    pub file_offset: u64,
    /// Size in bytes, when the symbol table says.
    pub size: u64,
}

/// A parsed ELF file.
pub struct Elf<'data> {
    file: object::File<'data>,
}

impl<'data> Elf<'data> {
    /// Parses `data` (the whole file).
    pub fn parse(data: &'data [u8]) -> Result<Self, ElfError> {
        let file = object::File::parse(data).map_err(|e| ElfError::Parse(e.to_string()))?;
        Ok(Self { file })
    }

    /// The defined function `name`, from the dynamic symbol table (what a shared library
    /// exports), else the static one.
    pub fn function(&self, name: &str) -> Result<Located, ElfError> {
        let sym = self
            .file
            .dynamic_symbols()
            .chain(self.file.symbols())
            .find(|s| s.is_definition() && s.name() == Ok(name))
            .ok_or_else(|| ElfError::NoSymbol(name.to_owned()))?;
        Ok(Located {
            address: sym.address(),
            file_offset: self.file_offset(sym.address())?,
            size: sym.size(),
        })
    }

    /// The file offset of virtual address `address`.
    pub fn file_offset(&self, address: u64) -> Result<u64, ElfError> {
        self.file
            .sections()
            .find_map(|s| {
                let (off, len) = s.file_range()?;
                let start = s.address();
                (address >= start && address - start < len).then(|| off + (address - start))
            })
            .ok_or(ElfError::NotInFile(address))
    }

    /// The bytes of section `name` and its virtual address.
    pub fn section(&self, name: &str) -> Option<(&'data [u8], u64)> {
        let s = self.file.section_by_name(name)?;
        Some((s.data().ok()?, s.address()))
    }

    /// `len` bytes of the file at virtual address `address` (for reading code).
    pub fn bytes_at(&self, address: u64, len: u64) -> Option<&'data [u8]> {
        self.file.sections().find_map(|s| {
            let start = s.address();
            if address < start || address - start >= s.size() {
                return None;
            }
            let data = s.data().ok()?;
            let from = usize::try_from(address - start).ok()?;
            let to = from.checked_add(usize::try_from(len).ok()?)?;
            data.get(from..to)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian's OpenSSL, as the proxies in the lab load it.
    #[test]
    fn libssl_exports_the_read_and_write_calls_at_file_offsets_inside_the_file() {
        let Some(data) = crate::probe::installed::library("libssl.so.3", "libssl3")
            .and_then(|p| std::fs::read(p).ok())
        else {
            return;
        };
        let elf = Elf::parse(&data).unwrap();
        for name in ["SSL_write", "SSL_write_ex", "SSL_read", "SSL_read_ex"] {
            let f = elf.function(name).unwrap();
            assert!(
                f.file_offset > 0 && f.file_offset < data.len() as u64,
                "{name}"
            );
            assert!(f.size > 0, "{name} has a size");
            // The function's code is where the offset says: the file's bytes there are the
            // bytes of its address, and they decode as an instruction.
            let at = usize::try_from(f.file_offset).unwrap();
            assert_eq!(
                Some(&data[at..at + 16]),
                elf.bytes_at(f.address, 16),
                "{name}"
            );
            let mut d = iced_x86::Decoder::with_ip(64, &data[at..at + 16], f.address, 0);
            assert!(!d.decode().is_invalid(), "{name}");
        }
        assert_eq!(
            elf.function("SSL_no_such_call"),
            Err(ElfError::NoSymbol("SSL_no_such_call".into()))
        );
    }

    #[test]
    fn garbage_is_not_elf() {
        assert!(matches!(
            Elf::parse(b"not an elf file at all"),
            Err(ElfError::Parse(_))
        ));
    }
}
