//! The HTTP exchanges of one connection: feeds both directions' framers, pairs responses
//! with requests in order (pipelining, 1xx), and reports heads and ends as they happen.

use std::collections::VecDeque;

use super::framer::{complete_lines, Framer, Framing, GapStep, Step};
use super::head::{
    looks_like_request, looks_like_response, parse_request, parse_response, RequestHead,
    ResponseHead, BODY_START,
};

/// Something that happened in an exchange. `index` numbers exchanges on the connection
/// from 1 (1 = the first seen; on a connection seen from its SYN, 1 = fresh).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpEvent {
    /// A request head; `ts` is the time of its first byte.
    Request {
        ts: i64,
        index: u32,
        head: RequestHead,
        /// The head was cut short by the capture.
        partial: bool,
    },
    RequestEnd {
        ts: i64,
        index: u32,
    },
    /// The final (non-1xx) response head; `ts` is the time of its first byte.
    Response {
        ts: i64,
        index: u32,
        head: ResponseHead,
        partial: bool,
    },
    ResponseEnd {
        ts: i64,
        index: u32,
    },
    /// The bytes in one direction are not HTTP/1.x.
    Garbage {
        ts: i64,
        from_client: bool,
        reason: &'static str,
    },
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    index: u32,
    head_method: bool,
    connect: bool,
}

/// The HTTP state of one connection.
#[derive(Debug, Default)]
pub struct HttpConn {
    req: Framer,
    res: Framer,
    /// Requests whose final response has not started, oldest first.
    waiting: VecDeque<Pending>,
    /// The exchange whose response is being received.
    responding: Option<u32>,
    /// The request being received.
    requesting: Option<u32>,
    /// Exchanges seen so far.
    pub count: u32,
    /// Set once either direction turned out not to be HTTP/1.x.
    pub unparseable: Option<&'static str>,
}

impl HttpConn {
    /// Requests sent whose final response has not begun.
    #[must_use]
    pub fn outstanding(&self) -> usize {
        self.waiting.len()
    }

    /// A sparse capture skipped part of the connection: whatever was in progress in either
    /// direction ended unseen. Forgets it and waits for the next message head.
    pub fn skipped(&mut self) {
        self.waiting.clear();
        self.responding = None;
        self.requesting = None;
        self.req.lose();
        self.res.lose();
    }

    /// A response is in progress (head seen, end not yet).
    #[must_use]
    pub fn responding(&self) -> Option<u32> {
        self.responding
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one call per segment, all plain values"
    )]
    /// Feeds bytes the client (`client`) or the server sent. `missing_before` uncaptured
    /// bytes precede `data`, `missing_after` follow it (snaplen), `segment_start` when
    /// `data` starts a segment.
    pub fn bytes(
        &mut self,
        client: bool,
        ts: i64,
        missing_before: u64,
        data: &[u8],
        missing_after: u64,
        segment_start: bool,
        out: &mut Vec<HttpEvent>,
    ) {
        if self.unparseable.is_some() && !segment_start {
            return;
        }
        self.gap(client, ts, missing_before, out);
        let starts: fn(&[u8]) -> bool = if client {
            looks_like_request
        } else {
            looks_like_response
        };
        let framer = if client { &mut self.req } else { &mut self.res };
        if segment_start && framer.segment_start(data, starts) {
            // resynchronised: whatever was in progress in this direction has ended unseen
            if client {
                self.requesting = None;
            } else {
                self.responding = None;
            }
        }
        let mut pos = 0;
        while pos < data.len() {
            let framer = if client { &mut self.req } else { &mut self.res };
            if framer.lost() {
                break;
            }
            match framer.feed(&data[pos..]) {
                Step::NeedMore => break,
                Step::Head { consumed } => {
                    pos += consumed;
                    self.head(client, ts, false, &data[pos..], out);
                }
                Step::End { consumed } => {
                    pos += consumed;
                    self.end(client, ts, out);
                }
                Step::Garbage { reason } => {
                    self.garbage(client, ts, reason, out);
                    break;
                }
            }
        }
        self.gap(client, ts, missing_after, out);
    }

    fn gap(&mut self, client: bool, ts: i64, n: u64, out: &mut Vec<HttpEvent>) {
        if n == 0 {
            return;
        }
        let framer = if client { &mut self.req } else { &mut self.res };
        match framer.gap(n) {
            GapStep::Continue => {}
            GapStep::End => self.end(client, ts, out),
            GapStep::PartialHead => self.head(client, ts, true, &[], out),
            GapStep::Lost => {
                if client {
                    self.requesting = None;
                } else {
                    self.responding = None;
                }
            }
        }
    }

    fn garbage(&mut self, client: bool, ts: i64, reason: &'static str, out: &mut Vec<HttpEvent>) {
        self.unparseable = Some(reason);
        out.push(HttpEvent::Garbage {
            ts,
            from_client: client,
            reason,
        });
    }

    /// A message head is complete (or `partial`, cut short); `after` holds the bytes that
    /// followed it in the same segment.
    fn head(
        &mut self,
        client: bool,
        ts: i64,
        partial: bool,
        after: &[u8],
        out: &mut Vec<HttpEvent>,
    ) {
        let framer = if client { &mut self.req } else { &mut self.res };
        let owned;
        let bytes = if partial {
            match complete_lines(framer.head()) {
                Some(v) => {
                    owned = v;
                    &owned[..]
                }
                None => {
                    framer.lose();
                    return;
                }
            }
        } else {
            framer.head()
        };
        if client {
            match parse_request(bytes) {
                Ok(head) => {
                    let framing = if head.method == "CONNECT" {
                        Framing::Tunnel
                    } else if head.chunked {
                        Framing::Chunked
                    } else {
                        Framing::Length(head.content_length.unwrap_or(0))
                    };
                    self.count += 1;
                    let index = self.count;
                    self.waiting.push_back(Pending {
                        index,
                        head_method: head.method == "HEAD",
                        connect: head.method == "CONNECT",
                    });
                    out.push(HttpEvent::Request {
                        ts,
                        index,
                        head,
                        partial,
                    });
                    if partial {
                        self.req.lose();
                    } else {
                        self.req.set_framing(framing);
                        if self.req.idle() {
                            out.push(HttpEvent::RequestEnd { ts, index });
                        } else {
                            self.requesting = Some(index);
                        }
                    }
                }
                Err(_) if partial => self.req.lose(),
                Err(_) => {
                    self.req.lose();
                    self.garbage(true, ts, "request head is not HTTP/1.x", out);
                }
            }
        } else {
            match parse_response(bytes) {
                Ok(mut head) => {
                    if head.status >= 500 && !after.is_empty() {
                        head.body_start = Some(after[..after.len().min(BODY_START)].to_vec());
                    }
                    self.response_head(ts, head, partial, out);
                }
                Err(_) if partial => self.res.lose(),
                Err(_) => {
                    self.res.lose();
                    self.garbage(false, ts, "response head is not HTTP/1.x", out);
                }
            }
        }
    }

    fn response_head(
        &mut self,
        ts: i64,
        head: ResponseHead,
        partial: bool,
        out: &mut Vec<HttpEvent>,
    ) {
        let pending = self.waiting.front().copied();
        let interim = (100..200).contains(&head.status) && head.status != 101;
        if interim {
            // 1xx: the request still waits for its final response
            self.res.set_framing(Framing::Empty);
            return;
        }
        let index = match pending {
            Some(p) => {
                self.waiting.pop_front();
                p.index
            }
            None => {
                // a response to a request we did not see (capture started mid-exchange)
                self.count += 1;
                self.count
            }
        };
        let head_method = pending.is_some_and(|p| p.head_method);
        let connect_ok = pending.is_some_and(|p| p.connect) && (200..300).contains(&head.status);
        let framing = if head.status == 101 || connect_ok {
            Framing::Tunnel
        } else if head_method || head.status == 204 || head.status == 304 {
            Framing::Empty
        } else if head.chunked {
            Framing::Chunked
        } else if let Some(n) = head.content_length {
            Framing::Length(n)
        } else {
            Framing::UntilClose
        };
        out.push(HttpEvent::Response {
            ts,
            index,
            head,
            partial,
        });
        if partial {
            self.res.lose();
            return;
        }
        self.res.set_framing(framing);
        if self.res.idle() {
            out.push(HttpEvent::ResponseEnd { ts, index });
        } else {
            self.responding = Some(index);
        }
    }

    fn end(&mut self, client: bool, ts: i64, out: &mut Vec<HttpEvent>) {
        if client {
            if let Some(index) = self.requesting.take() {
                out.push(HttpEvent::RequestEnd { ts, index });
            }
        } else if let Some(index) = self.responding.take() {
            out.push(HttpEvent::ResponseEnd { ts, index });
        }
    }

    /// The server closed its side: a close-delimited response ends here.
    pub fn server_closed(&mut self, ts: i64, out: &mut Vec<HttpEvent>) {
        if self.res.until_close() {
            self.res.lose();
            if let Some(index) = self.responding.take() {
                out.push(HttpEvent::ResponseEnd { ts, index });
            }
        }
    }
}

#[cfg(test)]
mod tests;
