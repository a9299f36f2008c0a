//! Turning what was seen into verdicts: the rules of DESIGN.md's cause table.

use super::state::{CConn, Ex, ExRef};
use super::{Check, Correlator, Role, GRACE_NS, REORDER_NS};
use crate::flow::ConnId;
use crate::verdict::{Cause, Confidence, Downstream, Evidence, Subcause, Upstream, Verdict};

/// Floor for "one round trip" when the handshake was not seen.
const DEFAULT_RTT_NS: i64 = 1_000_000;
/// The proxy closes the dead pooled connection "at about the time" of its error.
const NEVER_SENT_CLOSE_NS: i64 = 10_000_000;
/// How far before a never-sent error the proxy's close of the dead connection may lie.
const NEVER_SENT_LOOKBACK_NS: i64 = 100_000_000;
/// An attempt whose downstream request is still unresolved is checked again this long.
const MAX_WAIT_NS: i64 = 30 * GRACE_NS;

fn ms(ns: i64) -> f64 {
    (ns as f64 / 1e6 * 1000.0).round() / 1000.0
}

/// How an upstream closes idle connections, as seen so far.
#[derive(Debug, Clone, Copy, Default)]
struct Habit {
    idle_limit: Option<i64>,
    closes_after_response: bool,
}

/// How an upstream attempt without a response ended.
struct AttemptFailure {
    cause: Cause,
    subcause: Option<Subcause>,
    fin_to_request_ns: Option<i64>,
    /// Proxy closed first after this long (proxy_timeout).
    proxy_after_ns: Option<i64>,
    sentence: String,
    ts: i64,
    /// Every link was seen on the wire (false: rests on the inferred idle timer).
    confident: bool,
}

impl Correlator {
    pub(super) fn run_check(&mut self, check: Check, at_end: bool) {
        match check {
            Check::Exchange(conn, index) => self.check_exchange(conn, index, at_end),
            Check::Connect(conn) => self.check_connect(conn),
        }
    }

    fn reschedule(&mut self, check: Check, since: i64, at_end: bool) -> bool {
        if at_end || self.now - since > MAX_WAIT_NS {
            return false;
        }
        self.schedule(self.now + GRACE_NS, check);
        true
    }

    fn check_exchange(&mut self, conn: ConnId, index: u32, at_end: bool) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let Some(e) = c.ex(index) else {
            return;
        };
        if e.judged {
            return;
        }
        let role = self.roles.role(&c.info);
        let status = e.status();
        if e.unseen_end && status.is_none_or(|s| s < 500) {
            return; // a sparse capture skipped its end: nothing to judge
        }
        let closed = c.client_close().is_some() || c.server_close().is_some();
        let failed_status = status.is_some_and(|s| s >= 500);
        let no_response = e.req.is_some() && e.res.is_none();
        let cut_response = e.res.is_some() && e.res_end_ns.is_none() && c.server_close().is_some();
        if !(failed_status || (no_response && closed) || cut_response) {
            if no_response && !closed {
                let since = e.req_ns.unwrap_or(self.now);
                self.reschedule(Check::Exchange(conn, index), since, at_end);
            }
            return;
        }
        let verdict = match role {
            Role::Down => self.judge_downstream(conn, index),
            Role::Up => {
                // the downstream verdict covers the last attempt of a failed request
                let link = e.serves.and_then(|((dc, di), _)| {
                    let d = self.conns.get(&dc)?;
                    let x = d.ex(di)?;
                    let resolved =
                        x.res.is_some() || d.client_close().is_some() || d.server_close().is_some();
                    let down_failed = x.status().is_none_or(|s| s >= 500);
                    Some((
                        resolved,
                        down_failed,
                        x.attempts.last() == Some(&(conn, index)),
                    ))
                });
                let since = e.req_ns.unwrap_or(self.now);
                if link.is_none() && self.claim_skipped_5xx(conn, index) {
                    // the 5xx it served is judged with it, when its own check comes
                    return;
                }
                if let Some((resolved, down_failed, last)) = link {
                    if !resolved && self.reschedule(Check::Exchange(conn, index), since, at_end) {
                        return;
                    }
                    if resolved && down_failed && last {
                        return;
                    }
                }
                self.judge_attempt(conn, index)
            }
            Role::Unknown => {
                if failed_status && !cut_response {
                    Some(self.unknown_role(c, e))
                } else {
                    self.judge_attempt(conn, index)
                }
            }
        };
        if let Some(v) = verdict {
            self.mark_judged(conn, index);
            let v = self.vet(v);
            let v = self.vet(v);
            self.verdicts_out.push(v);
        }
    }

    /// Never guess: a verdict whose connections lost packets in the capture cannot rest on
    /// what is absent (no response byte, no SYN/ACK, no FIN), so it becomes `unexplained`,
    /// naming what is missing; the facts that were seen stay in its evidence.
    fn vet(&self, mut v: Verdict) -> Verdict {
        if v.cause == Cause::Unexplained {
            return v;
        }
        let mut tuples = Vec::new();
        if let Some(d) = &v.downstream {
            tuples.push((d.client, d.proxy));
        }
        if let Some(u) = &v.upstream {
            tuples.push((u.proxy, u.server));
        }
        let lost = tuples.iter().find_map(|t| {
            let c = self.conns.get(self.by_tuple.get(t)?)?;
            c.missing.map(|(ts, what)| (c.name(), ts, what))
        });
        if let Some((conn, ts, what)) = lost {
            v.reason = Some(format!(
                "packets missing: the capture lost {what} on {conn}, so it cannot show {} ({})",
                v.cause.name(),
                v.summary
            ));
            v.summary = format!("packets missing on {conn}; the cause cannot be proven");
            v.evidence.push(Evidence {
                ts_ns: ts,
                connection: conn,
                what: format!("capture lost {what}"),
            });
            v.cause = Cause::Unexplained;
            v.subcause = None;
            v.confidence = Confidence::Probable;
        }
        v
    }

    /// Sparse capture: a 5xx whose request was skipped (a response with no request seen)
    /// takes the one upstream attempt that failed, unlinked, in the 50 ms before it. The
    /// link is by timing only, so the verdict stays probable; with two candidates, none.
    fn claim_orphan_attempt(&mut self, conn: ConnId, index: u32) {
        if !self.sparse {
            return;
        }
        if let [up] = self.orphan_attempts(conn, index)[..] {
            let judged = self
                .conns
                .get(&up.0)
                .and_then(|c| c.ex(up.1))
                .is_none_or(|x| x.judged);
            if !judged {
                self.link_orphan((conn, index), up);
            }
        }
    }

    /// The unlinked failed upstream attempts a 5xx without a seen request could answer.
    fn orphan_attempts(&self, conn: ConnId, index: u32) -> Vec<ExRef> {
        let Some(e) = self.conns.get(&conn).and_then(|c| c.ex(index)) else {
            return Vec::new();
        };
        let Some(err_ns) = e
            .res_ns
            .filter(|_| e.req.is_none() && e.attempts.is_empty())
        else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for (id, uc) in &self.conns {
            if self.roles.role(&uc.info) != Role::Up {
                continue;
            }
            if !uc.closed_within(err_ns, ORPHAN_WINDOW_NS) {
                continue;
            }
            for x in &uc.exchanges {
                let fits = x
                    .req_ns
                    .is_some_and(|r| r <= err_ns && err_ns - r <= ORPHAN_WINDOW_NS)
                    && x.res.is_none()
                    && x.serves.is_none()
                    && !x.unseen_end;
                // judged ones count too: they make the choice ambiguous
                if fits {
                    found.push((*id, x.index));
                }
            }
        }
        found
    }

    fn link_orphan(&mut self, down: ExRef, up: ExRef) {
        if let Some(x) = self.conns.get_mut(&down.0).and_then(|c| c.ex_mut(down.1)) {
            x.attempts.push(up);
        }
        if let Some(x) = self.conns.get_mut(&up.0).and_then(|c| c.ex_mut(up.1)) {
            x.serves = Some((down, false));
        }
    }

    /// Sparse capture, seen from a failed upstream attempt with no downstream link: the one
    /// 5xx without a seen request sent in the 50 ms after the attempt's connection failed
    /// is linked to it (the counterpart of [`Self::claim_orphan_attempt`], for when the
    /// attempt is judged first). True when linked.
    fn claim_skipped_5xx(&mut self, conn: ConnId, index: u32) -> bool {
        if !self.sparse {
            return false;
        }
        let Some(uc) = self.conns.get(&conn) else {
            return false;
        };
        let Some(x) = uc.ex(index) else { return false };
        if x.res.is_some() || x.unseen_end || x.req_ns.is_none() {
            return false;
        }
        let mut found: Option<ExRef> = None;
        for (id, dc) in &self.conns {
            if self.roles.role(&dc.info) != Role::Down {
                continue;
            }
            for d in &dc.exchanges {
                let fits = d.req.is_none()
                    && d.attempts.is_empty()
                    && !d.judged
                    && d.status().is_some_and(|s| s >= 500)
                    && d.res_ns
                        .is_some_and(|r| uc.closed_within(r, ORPHAN_WINDOW_NS));
                if fits {
                    if found.is_some() {
                        return false;
                    }
                    found = Some((*id, d.index));
                }
            }
        }
        let Some(down) = found else { return false };
        // and this attempt is the only one that 5xx could answer
        if self.orphan_attempts(down.0, down.1) != [(conn, index)] {
            return false;
        }
        self.link_orphan(down, (conn, index));
        true
    }

    fn mark_judged(&mut self, conn: ConnId, index: u32) {
        if let Some(e) = self.conns.get_mut(&conn).and_then(|c| c.ex_mut(index)) {
            e.judged = true;
        }
    }

    fn unknown_role(&self, c: &CConn, e: &Ex) -> Verdict {
        let reason = "could not tell whether this connection faces the client or the upstream \
                      (no request seen forwarded between two connections); pass --proxy or \
                      --upstream";
        Verdict {
            cause: Cause::Unexplained,
            subcause: None,
            confidence: Confidence::Probable,
            status: e.status(),
            ts_ns: e.res_ns.unwrap_or(self.now),
            downstream: Some(downstream(c, e)),
            upstream: None,
            request_id: e.req.as_ref().and_then(|r| r.request_id.clone()),
            idempotent: e.req.as_ref().map(crate::http::RequestHead::idempotent),
            summary: format!(
                "{} answered {} on {}; its role is unknown",
                c.info.server,
                e.status().unwrap_or(0),
                c.name()
            ),
            reason: Some(reason.into()),
            evidence: base_evidence(c, e, "client", "server"),
            process: None,
        }
    }

    /// A verdict for a client-facing error (5xx, client gone, proxy closed).
    fn judge_downstream(&mut self, conn: ConnId, index: u32) -> Option<Verdict> {
        self.claim_orphan_attempt(conn, index);
        let c = self.conns.get(&conn)?.clone();
        let c = &c;
        let e = c.ex(index)?;
        let status = e.status();
        let mut evidence = base_evidence(c, e, "client", "proxy");
        let req_ns = e.req_ns.unwrap_or(self.now);
        let err_ns = e
            .res_ns
            .or_else(|| c.client_close())
            .or_else(|| c.server_close())
            .unwrap_or(self.now);
        let client_gone = status.is_none()
            && c.client_close()
                .is_some_and(|t| c.server_close().is_none_or(|s| t <= s));
        let mut v = Verdict {
            cause: Cause::Unexplained,
            subcause: None,
            confidence: Confidence::Proven,
            status,
            ts_ns: err_ns,
            downstream: Some(downstream(c, e)),
            upstream: None,
            request_id: e.req.as_ref().and_then(|r| r.request_id.clone()),
            idempotent: e.req.as_ref().map(crate::http::RequestHead::idempotent),
            summary: String::new(),
            reason: None,
            evidence: Vec::new(),
            process: None,
        };
        let what = status.map_or_else(|| "no response".to_owned(), |s| s.to_string());
        let attempt = e.attempts.last().copied();
        if let Some(a) = attempt.and_then(|a| self.attempt(a)) {
            let (uc, ue, link_proven) = a;
            evidence.extend(base_evidence(uc, ue, "proxy", "upstream"));
            let mut up = upstream_of(uc, ue);
            if !link_proven {
                v.confidence = Confidence::Probable;
            }
            if client_gone {
                v.cause = Cause::ClientAbort;
                v.summary = format!(
                    "the client closed after {:.1} ms, before any response; the upstream attempt on {} was still in flight",
                    ms(err_ns - req_ns),
                    uc.name()
                );
            } else if let Some(us) = ue.status() {
                if us >= 500 {
                    v.cause = Cause::UpstreamGenerated;
                    v.summary = format!(
                        "the upstream {} answered {us} itself; the proxy passed on {what}",
                        uc.info.server
                    );
                } else {
                    v.reason = Some(format!(
                        "the upstream answered {us} but the client got {what}"
                    ));
                    v.summary = format!("the proxy turned the upstream's {us} into {what}");
                }
            } else if let Some(f) = classify_attempt(uc, ue, self.habit(uc)) {
                up.fin_to_request_ms = f.fin_to_request_ns.map(ms);
                if f.cause == Cause::ProxyTimeout && status != Some(504) {
                    v.reason = Some(format!(
                        "the proxy closed the upstream connection itself after {:.1} ms and answered {what}",
                        ms(f.proxy_after_ns.unwrap_or(0))
                    ));
                    v.summary = format!("the proxy gave up on {} and answered {what}", uc.name());
                } else {
                    v.cause = f.cause;
                    v.subcause = f.subcause;
                    if !f.confident {
                        v.confidence = Confidence::Probable;
                    }
                    v.summary = format!("{}; the client got {what}", f.sentence);
                }
            } else if status == Some(504) {
                v.cause = Cause::ProxyTimeout;
                v.confidence = Confidence::Probable;
                v.summary = format!(
                    "no response on {} for {:.1} ms, then the proxy answered 504 (no close seen)",
                    uc.name(),
                    ms(err_ns - ue.req_ns.unwrap_or(req_ns))
                );
            } else {
                v.reason = Some(format!(
                    "the upstream attempt on {} had no response and was still open",
                    uc.name()
                ));
                v.summary =
                    format!("the proxy answered {what} while its upstream attempt was still open");
            }
            v.upstream = Some(up);
        } else if client_gone {
            v.cause = Cause::ClientAbort;
            v.summary = format!(
                "the client closed after {:.1} ms, before any response (no upstream attempt seen)",
                ms(err_ns - req_ns)
            );
        } else if let Some((tc, refused)) = self.find_trouble(req_ns, err_ns) {
            let tcc = &self.conns[&tc].clone();
            v.confidence = Confidence::Probable;
            v.cause = if refused {
                Cause::UpstreamRefused
            } else {
                Cause::ConnectTimeout
            };
            v.summary = if refused {
                format!("the proxy's connection to {} was refused (SYN answered by RST); the client got {what}", tcc.info.server)
            } else {
                format!(
                    "{} SYNs to {} went unanswered; the client got {what}",
                    tcc.syn_count, tcc.info.server
                )
            };
            evidence.extend(connect_evidence(tcc));
            v.upstream = Some(upstream_of_conn(tcc, None));
            if let Some(t) = self.conns.get_mut(&tc) {
                t.claimed = true;
            }
        } else if let Some(ic) = self.find_never_sent(status, req_ns, err_ns) {
            let ucc = &self.conns[&ic.conn];
            v.cause = Cause::KeepaliveRace;
            v.subcause = Some(Subcause::RequestNeverSent);
            v.confidence = Confidence::Probable;
            let mut up = upstream_of_conn(ucc, None);
            up.idle_ms = ic.idle_ns.map(ms);
            up.fin_to_request_ms = Some(ms(req_ns - ic.upstream_ns));
            v.summary = format!(
                "the pooled connection {} had been closed by the upstream ({}) {:.1} ms before; the proxy closed it and answered {what} without sending the request",
                ucc.name(),
                if ic.upstream_rst { "RST" } else { "FIN" },
                ms(err_ns - ic.upstream_ns)
            );
            evidence.push(Evidence {
                ts_ns: ic.upstream_ns,
                connection: ucc.name(),
                what: format!(
                    "upstream {} on the idle pooled connection (idle {})",
                    if ic.upstream_rst { "RST" } else { "FIN" },
                    ic.idle_ns
                        .map_or("unknown".into(), |i| format!("{:.1} ms", ms(i)))
                ),
            });
            if let Some(p) = ic.proxy_ns {
                evidence.push(Evidence {
                    ts_ns: p,
                    connection: ucc.name(),
                    what: "proxy closes the dead connection".into(),
                });
            }
            v.upstream = Some(up);
        } else {
            v.confidence = Confidence::Probable;
            v.reason = Some(if self.roles.knows_upstreams() {
                "no upstream attempt, connection failure or idle close matches this request".into()
            } else {
                "the capture shows no upstream connection: capture the proxy's upstream side too"
                    .into()
            });
            v.summary = format!("the proxy answered {what} with no upstream failure in sight");
        }
        if let Some(s) = e
            .res
            .as_ref()
            .and_then(|r| r.server.clone().or_else(|| r.via.clone()))
        {
            if !self.obs.proxy_software.contains(&s) {
                self.obs.proxy_software.push(s);
            }
        }
        evidence.sort_by_key(|x| x.ts_ns);
        v.evidence = evidence;
        Some(v)
    }

    /// How this upstream was seen closing idle connections so far: its idle timer
    /// (1.5 × the 90th percentile of the quiet times before it closed, with 3 samples or
    /// more) and whether it closes right after every response.
    fn habit(&self, c: &CConn) -> Habit {
        let s = c.info.server;
        let samples = self.obs.upstream_idle_closes.get(&s).map_or(0, Vec::len);
        // The percentile only changes with new samples: recompute then, not per verdict.
        let cached = self.idle_limits.borrow().get(&s).copied();
        let idle_limit = match cached {
            Some((n, limit)) if n == samples => limit,
            _ => {
                let limit = self
                    .obs
                    .upstream_idle_closes
                    .get(&s)
                    .filter(|v| v.len() >= 3)
                    .map(|v| {
                        let mut v = v.clone();
                        v.sort_unstable();
                        let p90 = v[(v.len() * 9 / 10).min(v.len() - 1)];
                        p90 + p90 / 2
                    });
                self.idle_limits.borrow_mut().insert(s, (samples, limit));
                limit
            }
        };
        let (closed, total) = self
            .obs
            .close_after_response
            .get(&s)
            .copied()
            .unwrap_or((0, 0));
        Habit {
            idle_limit,
            closes_after_response: closed >= 3 && closed * 10 >= total * 8,
        }
    }

    /// The upstream exchange `a`, its connection, and whether its link is proven.
    fn attempt(&self, a: ExRef) -> Option<(&CConn, &Ex, bool)> {
        let c = self.conns.get(&a.0)?;
        let e = c.ex(a.1)?;
        Some((c, e, e.serves.is_some_and(|(_, p)| p)))
    }

    /// A verdict for a failed upstream attempt on its own.
    fn judge_attempt(&self, conn: ConnId, index: u32) -> Option<Verdict> {
        let c = self.conns.get(&conn)?;
        let e = c.ex(index)?;
        let mut evidence = base_evidence(c, e, "proxy", "upstream");
        let mut up = upstream_of(c, e);
        let mut v = Verdict {
            cause: Cause::Unexplained,
            subcause: None,
            confidence: Confidence::Proven,
            status: None,
            ts_ns: e
                .res_ns
                .or_else(|| c.server_close())
                .or_else(|| c.client_close())
                .unwrap_or(self.now),
            downstream: None,
            upstream: None,
            request_id: e.req.as_ref().and_then(|r| r.request_id.clone()),
            idempotent: e.req.as_ref().map(crate::http::RequestHead::idempotent),
            summary: String::new(),
            reason: None,
            evidence: Vec::new(),
            process: None,
        };
        let mut tail = String::new();
        if let Some(((dc, di), _)) = e.serves {
            if let Some(d) = self.conns.get(&dc) {
                if let Some(x) = d.ex(di) {
                    v.downstream = Some(downstream(d, x));
                    v.status = x.status();
                    evidence.extend(base_evidence(d, x, "client", "proxy"));
                    tail = match x.status() {
                        Some(s) if s < 500 => format!("; the proxy retried and the client got {s}"),
                        Some(s) => format!("; the client got {s}"),
                        None => String::new(),
                    };
                }
            }
        } else {
            tail = "; the client side of this request was not seen (TLS or not captured)".into();
        }
        if let Some(us) = e.status() {
            if us < 500 {
                return None;
            }
            v.cause = Cause::UpstreamGenerated;
            v.status = v.status.or(Some(us));
            v.summary = format!("the upstream {} answered {us} itself{tail}", c.info.server);
        } else if e.res.is_some() {
            v.cause = Cause::UpstreamClosedEarly;
            v.summary = format!(
                "the upstream {} closed in the middle of its response{tail}",
                c.info.server
            );
        } else {
            let f = classify_attempt(c, e, self.habit(c))?;
            up.fin_to_request_ms = f.fin_to_request_ns.map(ms);
            v.cause = f.cause;
            v.subcause = f.subcause;
            if !f.confident {
                v.confidence = Confidence::Probable;
            }
            v.ts_ns = f.ts;
            v.summary = format!("{}{tail}", f.sentence);
            if v.cause == Cause::ProxyTimeout && e.serves.is_none() {
                // Only the client's side tells a proxy timeout (504) from a client that
                // left first (499, the proxy then drops its attempt too).
                v.reason = Some(format!(
                    "{}; without the client's side of this request a proxy timeout and a \
                     client that gave up first look the same",
                    v.summary
                ));
                v.cause = Cause::Unexplained;
                v.subcause = None;
                v.confidence = Confidence::Probable;
            }
        }
        v.upstream = Some(up);
        evidence.sort_by_key(|x| x.ts_ns);
        v.evidence = evidence;
        Some(v)
    }

    /// Connections that never carried a request: refused, or SYNs without answer.
    fn check_connect(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.claimed || c.established_ns.is_some() {
            return;
        }
        if self.roles.role(&c.info) == Role::Down {
            return;
        }
        let (cause, summary) = if c.refused_ns.is_some() {
            (
                Cause::UpstreamRefused,
                format!(
                    "{} refused the connection (SYN answered by RST)",
                    c.info.server
                ),
            )
        } else if c.syn_count >= 2 {
            (
                Cause::ConnectTimeout,
                format!("{} SYNs to {} went unanswered", c.syn_count, c.info.server),
            )
        } else {
            return;
        };
        let v = Verdict {
            cause,
            subcause: None,
            confidence: Confidence::Proven,
            status: None,
            ts_ns: c.refused_ns.or(c.last_syn_ns).unwrap_or(c.info.first_ns),
            downstream: None,
            upstream: Some(upstream_of_conn(c, None)),
            request_id: None,
            idempotent: None,
            summary: format!("{summary}; no client-facing error was matched to it"),
            reason: None,
            evidence: connect_evidence(c),
            process: None,
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.claimed = true;
        }
        self.verdicts_out.push(v);
    }

    /// A refused or unanswered connection attempt made while the request waited.
    fn find_trouble(&self, req_ns: i64, err_ns: i64) -> Option<(ConnId, bool)> {
        self.troubles
            .iter()
            .filter_map(|id| self.conns.get(id))
            .filter(|t| !t.claimed && t.established_ns.is_none())
            .filter(|t| self.roles.role(&t.info) != Role::Down)
            .filter(|t| {
                let start = t.info.syn_ns.unwrap_or(t.info.first_ns);
                start + REORDER_NS >= req_ns && start <= err_ns + REORDER_NS
            })
            .map(|t| (t.info.id, t.refused_ns.is_some()))
            .next()
    }

    /// An idle pooled connection closed by the upstream shortly before the error, which
    /// the proxy closed at about the time of the error and on which no request went out.
    fn find_never_sent(
        &mut self,
        status: Option<u16>,
        req_ns: i64,
        err_ns: i64,
    ) -> Option<super::IdleClose> {
        if !matches!(status, Some(500 | 502)) {
            return None;
        }
        let conns = &self.conns;
        let roles = &self.roles;
        // Proxy closes are in time order. The dead pooled connection is closed by the proxy
        // after the request arrived and about when it answered; several never-sent errors
        // within a few milliseconds compete for the closes around them, so each takes the
        // earliest one that fits and leaves the later ones to the later errors.
        // Go's pool can hand out a connection its read loop is closing that very moment, so
        // the proxy's close may come a little before the request; and a stalled proxy may
        // answer well after it. Bounded, so a slow request does not reach far back.
        let from = (req_ns - NEVER_SENT_CLOSE_NS).max(err_ns - NEVER_SENT_LOOKBACK_NS);
        let start = self.proxy_closes.partition_point(|&(p, _)| p < from);
        let mut best: Option<(i64, ConnId)> = None;
        for &(p, id) in self.proxy_closes.range(start..) {
            if p > err_ns + NEVER_SENT_CLOSE_NS {
                break;
            }
            let Some(ic) = self.idle_closes.get(&id) else {
                continue;
            };
            let fits = !ic.claimed
                && ic.upstream_ns <= err_ns + REORDER_NS
                && conns.get(&ic.conn).is_some_and(|c| {
                    roles.role(&c.info) != Role::Down
                        && !c
                            .exchanges
                            .iter()
                            .any(|e| e.req_ns.is_some_and(|t| t >= ic.upstream_ns))
                });
            if fits {
                best = Some((p, id));
                break;
            }
        }
        let best = self.idle_closes.get_mut(&best?.1)?;
        best.claimed = true;
        Some(*best)
    }
}

/// A kernel write-after-idle report belongs to a request captured at most this long after
/// it (the clocks are aligned to within microseconds; this is slack)...
const KERNEL_SEND_BEFORE_NS: i64 = 2_000_000;
/// ...or this long before it (the tracepoint fires when the write returns, after the
/// packet left, and a large write takes a while).
const KERNEL_SEND_AFTER_NS: i64 = 50_000_000;

/// How long before a 5xx its upstream attempt may have failed, for a link by timing alone.
const ORPHAN_WINDOW_NS: i64 = 50_000_000;

/// What a sparse capture cannot decide: an `unexplained` attempt saying what was skipped.
fn sparse_unknown(sentence: String, ts: i64) -> AttemptFailure {
    AttemptFailure {
        cause: Cause::Unexplained,
        subcause: None,
        fin_to_request_ns: None,
        proxy_after_ns: None,
        sentence,
        ts,
        confident: false,
    }
}

/// Classifies an upstream attempt that got no response (or a cut one).
/// `habit`: how this upstream was seen closing idle connections.
fn classify_attempt(c: &CConn, e: &Ex, habit: Habit) -> Option<AttemptFailure> {
    let req_ns = e.req_ns?;
    let name = c.name();
    if e.unseen_end {
        return Some(sparse_unknown(
            format!("a sparse capture skipped the end of the attempt on {name}"),
            req_ns,
        ));
    }
    // After skipped exchanges the capture cannot time the quiet before this request; the
    // kernel can (a write after idle on the socket, reported when the write returned).
    let idle_ns = e.idle_ns.or_else(|| {
        c.kernel_idle
            .iter()
            .filter(|&&(t, _)| {
                t >= req_ns - KERNEL_SEND_BEFORE_NS && t <= req_ns + KERNEL_SEND_AFTER_NS
            })
            .min_by_key(|&&(t, _)| (t - req_ns).abs())
            .map(|&(_, idle)| idle)
    });
    let up_close = c.server_close();
    let px_close = c.client_close();
    match (up_close, px_close) {
        (None, None) => None,
        (None, Some(p)) => Some(proxy_closed(c, req_ns, p)),
        (Some(u), Some(p)) if p < u => Some(proxy_closed(c, req_ns, p)),
        (Some(u), _) => {
            let rtt = c.rtt_ns.unwrap_or(DEFAULT_RTT_NS).max(100_000) + 100_000;
            let reused = e.index >= 2 || !c.info.opener_known;
            let idle = !e.busy;
            if let Some(fin) = c.fin_server {
                if reused && idle && fin <= req_ns + rtt && e.res.is_none() {
                    return Some(AttemptFailure {
                        cause: Cause::KeepaliveRace,
                        subcause: Some(Subcause::FinCrossed),
                        fin_to_request_ns: Some(req_ns - fin),
                        proxy_after_ns: None,
                        sentence: format!(
                            "the request went out on reused connection {name} (exchange #{}, idle {}) {} the upstream's FIN; no response byte came back",
                            e.index,
                            idle_ns.map_or("unknown".into(), |i| format!("{:.1} ms", ms(i))),
                            if fin <= req_ns {
                                format!("{:.3} ms after", ms(req_ns - fin))
                            } else {
                                format!("{:.3} ms before (within one round trip)", ms(fin - req_ns))
                            }
                        ),
                        ts: u.max(req_ns),
                        confident: true,
                    });
                }
            }
            // The upstream's idle timer fired: it closed (FIN, or RST with the request
            // unread) about when it closes idle connections, without a response byte.
            let quiet = idle_ns.map(|i| req_ns - i);
            if let Some(q) = quiet {
                let timer = habit.idle_limit.is_some_and(|limit| u - q <= limit + rtt);
                if reused && idle && e.res.is_none() && (timer || habit.closes_after_response) {
                    return Some(AttemptFailure {
                        cause: Cause::KeepaliveRace,
                        subcause: Some(Subcause::FinCrossed),
                        fin_to_request_ns: Some(req_ns - u),
                        proxy_after_ns: None,
                        sentence: format!(
                            "the request went out on reused connection {name} (exchange #{}, idle {:.1} ms); the upstream closed it ({}) {:.3} ms later, {:.1} ms after it went idle, {}, without a response byte",
                            e.index,
                            ms(req_ns - q),
                            if c.fin_server == Some(u) { "FIN" } else { "RST" },
                            ms(u - req_ns),
                            ms(u - q),
                            if habit.closes_after_response {
                                "as it closes after every response"
                            } else {
                                "as it closes idle connections"
                            }
                        ),
                        ts: u,
                        confident: false,
                    });
                }
            }
            if c.skipped && reused && idle_ns.is_none() && e.res.is_none() {
                return Some(sparse_unknown(
                    format!("a sparse capture skipped the exchanges before this request on {name}, and no kernel report says how long the connection sat idle"),
                    u,
                ));
            }
            let rst_first = c
                .rst_server
                .is_some_and(|r| c.fin_server.is_none_or(|f| r < f));
            let state = if e.index >= 2 { "busy" } else { "fresh" };
            if rst_first {
                Some(AttemptFailure {
                    cause: Cause::UpstreamReset,
                    subcause: None,
                    fin_to_request_ns: None,
                    proxy_after_ns: None,
                    sentence: format!(
                        "the upstream reset {state} connection {name} {:.1} ms after the request (exchange #{})",
                        ms(u - req_ns),
                        e.index
                    ),
                    ts: u,
                    confident: true,
                })
            } else {
                Some(AttemptFailure {
                    cause: Cause::UpstreamClosedEarly,
                    subcause: None,
                    fin_to_request_ns: c.fin_server.map(|f| req_ns - f),
                    proxy_after_ns: None,
                    sentence: format!(
                        "the upstream closed {name} (FIN) {:.1} ms after the request without a complete response (exchange #{})",
                        ms(u - req_ns),
                        e.index
                    ),
                    ts: u,
                    confident: true,
                })
            }
        }
    }
}

fn proxy_closed(c: &CConn, req_ns: i64, p: i64) -> AttemptFailure {
    AttemptFailure {
        cause: Cause::ProxyTimeout,
        subcause: None,
        fin_to_request_ns: None,
        proxy_after_ns: Some(p - req_ns),
        sentence: format!(
            "no response on {} for {:.1} ms, then the proxy closed it",
            c.name(),
            ms(p - req_ns)
        ),
        ts: p,
        confident: true,
    }
}

fn downstream(c: &CConn, e: &Ex) -> Downstream {
    Downstream {
        client: c.info.client,
        proxy: c.info.server,
        method: e.req.as_ref().map(|r| r.method.clone()),
        target: e.req.as_ref().map(|r| r.target.clone()),
    }
}

fn upstream_of_conn(c: &CConn, index: Option<u32>) -> Upstream {
    Upstream {
        proxy: c.info.client,
        server: c.info.server,
        exchange_index: index,
        seen_from_start: c.info.opener_known,
        idle_ms: None,
        fin_to_request_ms: None,
        close_order: c.close_order("proxy", "upstream"),
    }
}

fn upstream_of(c: &CConn, e: &Ex) -> Upstream {
    let mut u = upstream_of_conn(c, Some(e.index));
    u.idle_ms = e.idle_ns.map(ms);
    u
}

fn base_evidence(c: &CConn, e: &Ex, client: &str, server: &str) -> Vec<Evidence> {
    let name = c.name();
    let mut v = Vec::new();
    let mut push = |ts: Option<i64>, what: String| {
        if let Some(ts) = ts {
            v.push(Evidence {
                ts_ns: ts,
                connection: name.clone(),
                what,
            });
        }
    };
    push(
        c.info.syn_ns,
        format!("{client} opens the connection (SYN)"),
    );
    if let Some(r) = &e.req {
        let idle = match (e.index, e.idle_ns) {
            (1, _) if c.info.opener_known => "fresh connection".to_owned(),
            (_, Some(i)) => format!("reused, idle {:.1} ms", ms(i)),
            _ => "reused".to_owned(),
        };
        push(
            e.req_ns,
            format!(
                "{client} sends {} {} (exchange #{}, {idle})",
                r.method, r.target, e.index
            ),
        );
    }
    if let Some(r) = &e.res {
        push(e.res_ns, format!("{server} answers {}", r.status));
    } else {
        push(e.req_end_ns.filter(|_| false), String::new());
    }
    push(c.fin_server, format!("{server} FIN"));
    push(c.rst_server, format!("{server} RST"));
    push(c.fin_client, format!("{client} FIN"));
    push(c.rst_client, format!("{client} RST"));
    v
}

fn connect_evidence(c: &CConn) -> Vec<Evidence> {
    let name = c.name();
    let mut v = vec![];
    if let Some(s) = c.info.syn_ns {
        v.push(Evidence {
            ts_ns: s,
            connection: name.clone(),
            what: "proxy sends SYN".into(),
        });
    }
    if c.syn_count >= 2 {
        if let Some(s) = c.last_syn_ns {
            v.push(Evidence {
                ts_ns: s,
                connection: name.clone(),
                what: format!("SYN sent {} times without answer", c.syn_count),
            });
        }
    }
    if let Some(r) = c.refused_ns {
        v.push(Evidence {
            ts_ns: r,
            connection: name,
            what: "upstream answers the SYN with RST".into(),
        });
    }
    v
}
