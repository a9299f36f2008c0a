//! Message boundaries in one direction of an HTTP/1.x connection: finds heads, then follows
//! the body's framing (Content-Length, chunked, close-delimited) through captured bytes and
//! through gaps of bytes that were never captured (snaplen, lost segments).

/// Longest head accepted before the stream counts as garbage.
pub const MAX_HEAD: usize = 64 * 1024;

/// How the body after a head is delimited (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (requests without length, HEAD responses, 1xx, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the sender closes.
    UntilClose,
    /// The connection stops carrying HTTP (101 Switching Protocols, CONNECT).
    Tunnel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size { value: u64, digits: u8 },
    Ext { value: u64 },
    SizeLf { value: u64 },
    Data(u64),
    DataCr,
    DataLf,
    Trailer { line_start: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between messages.
    Start,
    /// Inside a head; `scan` is where the search for the empty line resumes.
    Head {
        scan: usize,
    },
    /// A head was returned; the caller has to say how its body is framed.
    AwaitFraming,
    Body(u64),
    Chunked(Chunk),
    UntilClose,
    /// Lost track of boundaries; resynchronise at a segment that starts a message.
    Lost,
    Tunnel,
}

/// What [`Framer::feed`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The input was used up without reaching a boundary.
    NeedMore,
    /// A head is complete after `consumed` bytes; read it with [`Framer::head`], then call
    /// [`Framer::set_framing`].
    Head { consumed: usize },
    /// The message ended after `consumed` bytes.
    End { consumed: usize },
    /// The bytes are not HTTP; the framer is lost until a segment starts a message.
    Garbage { reason: &'static str },
}

/// What a gap of uncaptured bytes did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapStep {
    /// Still in sync.
    Continue,
    /// The gap ended the message in progress.
    End,
    /// A head was cut short: read what there is with [`Framer::head`]; framing is lost.
    PartialHead,
    /// Framing is lost.
    Lost,
}

/// One direction's message framer.
#[derive(Debug, Clone)]
pub struct Framer {
    state: State,
    buf: Vec<u8>,
}

impl Default for Framer {
    fn default() -> Self {
        Framer {
            state: State::Start,
            buf: Vec::new(),
        }
    }
}

fn find_end(buf: &[u8], from: usize) -> Option<usize> {
    let from = from.saturating_sub(3);
    let hay = buf.get(from..)?;
    hay.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| from + p + 4)
        .or_else(|| {
            hay.windows(2)
                .position(|w| w == b"\n\n")
                .map(|p| from + p + 2)
        })
}

impl Framer {
    /// True between messages (nothing of a next message seen yet).
    #[must_use]
    pub fn idle(&self) -> bool {
        self.state == State::Start
    }

    /// True when boundaries are unknown.
    #[must_use]
    pub fn lost(&self) -> bool {
        matches!(self.state, State::Lost | State::Tunnel)
    }

    /// True while inside a message (head or body).
    #[must_use]
    pub fn in_message(&self) -> bool {
        matches!(
            self.state,
            State::Head { .. }
                | State::AwaitFraming
                | State::Body(_)
                | State::Chunked(_)
                | State::UntilClose
        )
    }

    /// True when the body runs until the sender closes.
    #[must_use]
    pub fn until_close(&self) -> bool {
        self.state == State::UntilClose
    }

    /// The head bytes gathered so far (complete after [`Step::Head`]).
    #[must_use]
    pub fn head(&self) -> &[u8] {
        &self.buf
    }

    /// A segment begins here: a lost framer picks up again if `data` starts a message.
    pub fn segment_start(&mut self, data: &[u8], starts_message: fn(&[u8]) -> bool) -> bool {
        if self.state == State::Lost && starts_message(data) {
            self.state = State::Start;
            return true;
        }
        false
    }

    /// Says how the body after the head just returned is framed.
    pub fn set_framing(&mut self, f: Framing) {
        self.buf.clear();
        self.state = match f {
            Framing::Empty | Framing::Length(0) => State::Start,
            Framing::Length(n) => State::Body(n),
            Framing::Chunked => State::Chunked(Chunk::Size {
                value: 0,
                digits: 0,
            }),
            Framing::UntilClose => State::UntilClose,
            Framing::Tunnel => State::Tunnel,
        };
    }

    /// Marks framing as lost (e.g. after a head that could not be parsed).
    pub fn lose(&mut self) {
        self.buf.clear();
        self.state = State::Lost;
    }

    /// Consumes captured bytes up to the next boundary.
    pub fn feed(&mut self, data: &[u8]) -> Step {
        let mut pos = 0;
        while pos < data.len() {
            match self.state {
                State::Start => {
                    let skip = data[pos..]
                        .iter()
                        .take_while(|b| **b == b'\r' || **b == b'\n')
                        .count();
                    pos += skip;
                    if pos < data.len() && !data[pos].is_ascii_uppercase() {
                        self.lose();
                        return Step::Garbage {
                            reason: "bytes do not start an HTTP/1.x message",
                        };
                    }
                    if pos < data.len() {
                        self.buf.clear();
                        self.state = State::Head { scan: 0 };
                    }
                }
                State::Head { scan } => {
                    let room = MAX_HEAD.saturating_sub(self.buf.len());
                    let take = (data.len() - pos).min(room.max(1));
                    let old = self.buf.len();
                    self.buf.extend_from_slice(&data[pos..pos + take]);
                    if let Some(end) = find_end(&self.buf, scan) {
                        let used = end - old;
                        self.buf.truncate(end);
                        self.state = State::AwaitFraming;
                        return Step::Head {
                            consumed: pos + used,
                        };
                    }
                    pos += take;
                    if self.buf.len() >= MAX_HEAD {
                        self.lose();
                        return Step::Garbage {
                            reason: "message head longer than 64 KiB",
                        };
                    }
                    self.state = State::Head {
                        scan: self.buf.len(),
                    };
                }
                State::AwaitFraming => return Step::NeedMore,
                State::Body(n) => {
                    let avail = (data.len() - pos) as u64;
                    if avail >= n {
                        self.state = State::Start;
                        return Step::End {
                            consumed: pos + n as usize,
                        };
                    }
                    self.state = State::Body(n - avail);
                    pos = data.len();
                }
                State::Chunked(c) => match self.chunk(c, &data[pos..]) {
                    Ok((used, done)) => {
                        pos += used;
                        if done {
                            self.state = State::Start;
                            return Step::End { consumed: pos };
                        }
                    }
                    Err(reason) => {
                        self.lose();
                        return Step::Garbage { reason };
                    }
                },
                State::UntilClose | State::Lost | State::Tunnel => pos = data.len(),
            }
        }
        Step::NeedMore
    }

    /// Steps the chunked decoder; returns bytes used and whether the message ended.
    fn chunk(&mut self, mut c: Chunk, data: &[u8]) -> Result<(usize, bool), &'static str> {
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            c = match c {
                Chunk::Size { value, digits } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if digits >= 15 {
                            return Err("chunk size too large");
                        }
                        let d = (b as char).to_digit(16).unwrap_or(0);
                        Chunk::Size {
                            value: value * 16 + u64::from(d),
                            digits: digits + 1,
                        }
                    }
                    _ if digits == 0 => return Err("chunk size is not hexadecimal"),
                    b';' | b' ' | b'\t' => Chunk::Ext { value },
                    b'\r' => Chunk::SizeLf { value },
                    b'\n' => size_line_done(value),
                    _ => return Err("bad character after chunk size"),
                },
                Chunk::Ext { value } => match b {
                    b'\n' => size_line_done(value),
                    b'\r' => Chunk::SizeLf { value },
                    _ => Chunk::Ext { value },
                },
                Chunk::SizeLf { value } => {
                    if b != b'\n' {
                        return Err("chunk size line not ended by CRLF");
                    }
                    size_line_done(value)
                }
                Chunk::Data(n) => {
                    let avail = (data.len() - i) as u64;
                    let take = avail.min(n);
                    i += take as usize;
                    c = if take == n {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(n - take)
                    };
                    continue;
                }
                Chunk::DataCr => match b {
                    b'\r' => Chunk::DataLf,
                    b'\n' => Chunk::Size {
                        value: 0,
                        digits: 0,
                    },
                    _ => return Err("chunk data not followed by CRLF"),
                },
                Chunk::DataLf => {
                    if b != b'\n' {
                        return Err("chunk data not followed by CRLF");
                    }
                    Chunk::Size {
                        value: 0,
                        digits: 0,
                    }
                }
                Chunk::Trailer { line_start } => match b {
                    b'\r' => Chunk::Trailer { line_start },
                    b'\n' if line_start => return Ok((i + 1, true)),
                    b'\n' => Chunk::Trailer { line_start: true },
                    _ => Chunk::Trailer { line_start: false },
                },
            };
            i += 1;
        }
        self.state = State::Chunked(c);
        Ok((i, false))
    }

    /// Accounts for `n` bytes that exist on the wire but were not captured.
    pub fn gap(&mut self, n: u64) -> GapStep {
        if n == 0 {
            return GapStep::Continue;
        }
        match self.state {
            State::Body(left) if n < left => {
                self.state = State::Body(left - n);
                GapStep::Continue
            }
            State::Body(left) if n == left => {
                self.state = State::Start;
                GapStep::End
            }
            State::Chunked(Chunk::Data(left)) if n < left => {
                self.state = State::Chunked(Chunk::Data(left - n));
                GapStep::Continue
            }
            State::Chunked(Chunk::Data(left)) if n == left => {
                self.state = State::Chunked(Chunk::DataCr);
                GapStep::Continue
            }
            State::UntilClose | State::Tunnel | State::Lost => GapStep::Continue,
            State::Head { .. } => {
                self.state = State::Lost;
                GapStep::PartialHead
            }
            _ => {
                self.lose();
                GapStep::Lost
            }
        }
    }
}

fn size_line_done(value: u64) -> Chunk {
    if value == 0 {
        Chunk::Trailer { line_start: true }
    } else {
        Chunk::Data(value)
    }
}

/// Parses what there is of a head cut short: the complete lines, closed with an empty line.
#[must_use]
pub fn complete_lines(partial: &[u8]) -> Option<Vec<u8>> {
    let last = partial.iter().rposition(|&b| b == b'\n')?;
    let mut v = partial[..=last].to_vec();
    if !v.ends_with(b"\r\n") {
        v.pop();
        v.extend_from_slice(b"\r\n");
    }
    v.extend_from_slice(b"\r\n");
    Some(v)
}

#[cfg(test)]
mod tests;
