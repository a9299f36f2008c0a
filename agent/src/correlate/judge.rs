//! When and what to judge: an exchange once its error is due ([`super::GRACE_NS`] after
//! it), a connection that never carried a request; each verdict assembled from what the
//! rules in [`super::rules`] conclude, then vetted against packet loss.

use super::evidence::{base_evidence, downstream, ms, upstream_of};
use super::rules::{self, classify_attempt, AttemptFailure, Finding, Habit, Rule};
use super::state::{CConn, Ex, ExRef};
use super::{Check, Correlator, Role, GRACE_NS};
use crate::advice::recognise::Proxy;
use crate::flow::ConnId;
use crate::timeouts::IdleTimer;
use crate::verdict::{Cause, Confidence, Evidence, Fact, Leg, Party, Verdict};

/// An attempt whose downstream request is still unresolved is checked again this long.
const MAX_WAIT_NS: i64 = 30 * GRACE_NS;

/// A client-facing exchange being judged.
pub(super) struct Down {
    pub status: Option<u16>,
    /// `502`, or `no response`.
    pub what: String,
    pub req_ns: i64,
    pub err_ns: i64,
    /// The client closed before any response (and before the proxy closed).
    pub client_gone: bool,
}

impl Down {
    fn new(c: &CConn, e: &Ex, now: i64) -> Self {
        let status = e.status();
        Down {
            status,
            what: status.map_or_else(|| "no response".to_owned(), |s| s.to_string()),
            req_ns: e.req_ns.unwrap_or(now),
            err_ns: e
                .res_ns
                .or_else(|| c.client_close())
                .or_else(|| c.server_close())
                .unwrap_or(now),
            client_gone: status.is_none()
                && c.client_close()
                    .is_some_and(|t| c.server_close().is_none_or(|s| t <= s)),
        }
    }
}

impl Correlator {
    pub(super) fn run_check(&mut self, check: Check, at_end: bool) {
        match check {
            Check::Exchange(conn, index) => self.check_exchange(conn, index, at_end),
            Check::Connect(conn) => self.check_connect(conn),
        }
    }

    /// Whether `rule` may decide (tests switch rules off one at a time).
    pub(super) fn rule_on(&self, rule: Rule) -> bool {
        !self.rules_off.contains(&rule)
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
        // An attempt whose upstream's idle timer is not known yet waits for it.
        let attempt = match role {
            Role::Down => e.attempts.last().copied(),
            _ => Some((conn, index)),
        };
        let waits = attempt
            .and_then(|(ac, ai)| {
                let c = self.conns.get(&ac)?;
                Some(rules::waits_for_idle_timer(c, c.ex(ai)?, self.habit(c)))
            })
            .unwrap_or(false);
        if waits {
            let since = e.req_ns.unwrap_or(self.now);
            if self.reschedule(Check::Exchange(conn, index), since, at_end) {
                return;
            }
        }
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let Some(e) = c.ex(index) else {
            return;
        };
        let verdict = match role {
            // another process's connection: not the proxy's to judge
            Role::Other => return,
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
                    // A failed attempt whose client got an answer no later attempt gave:
                    // a guessed link that another guess may fit better.
                    if resolved
                        && !down_failed
                        && last
                        && self.rule_on(Rule::UncertainLink)
                        && self.swap_contradicting_guess(conn, index)
                    {
                        return;
                    }
                }
                let mut v = self.judge_attempt(conn, index);
                if let Some(v) = &mut v {
                    self.link_unreadable_client(v, since);
                }
                v
            }
            Role::Unknown => {
                if failed_status && !cut_response {
                    Some(rules::unexplained::unknown_role(c, e, self.now))
                } else {
                    let since = e.req_ns.unwrap_or(self.now);
                    let mut v = self.judge_attempt(conn, index);
                    if let Some(v) = &mut v {
                        self.link_unreadable_client(v, since);
                    }
                    v
                }
            }
        };
        if let Some(v) = verdict {
            self.mark_judged(conn, index);
            if role == Role::Down {
                // the verdict covers its last attempt, whose own check then has nothing to
                // judge even once this exchange is no longer kept
                let last = self
                    .conns
                    .get(&conn)
                    .and_then(|c| c.ex(index))
                    .and_then(|e| e.attempts.last().copied());
                if let Some((ac, ai)) = last {
                    self.mark_judged(ac, ai);
                }
            }
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
            tuples.push(((d.client, d.proxy), Leg::Client));
        }
        if let Some(u) = &v.upstream {
            tuples.push(((u.proxy, u.server), Leg::Upstream));
        }
        let lost = tuples.iter().find_map(|(t, leg)| {
            let c = self.conns.get(self.by_tuple.get(t)?)?;
            c.missing.map(|(ts, what)| (c.conn(), ts, what, *leg))
        });
        if let Some((conn, ts, what, leg)) = lost {
            v.reason = Some(format!(
                "packets missing: the capture lost {what} on {conn}, so it cannot show {} ({})",
                v.cause.name(),
                v.summary
            ));
            v.summary = format!("packets missing on {conn}; the cause cannot be proven");
            v.evidence.push(Evidence::new(
                ts,
                conn,
                leg,
                Fact::CaptureLost { what: what.into() },
            ));
            v.cause = Cause::Unexplained;
            v.subcause = None;
            v.confidence = Confidence::Probable;
        }
        v
    }

    pub(super) fn mark_judged(&mut self, conn: ConnId, index: u32) {
        if let Some(e) = self.conns.get_mut(&conn).and_then(|c| c.ex_mut(index)) {
            e.judged = true;
        }
    }

    /// A verdict for a client-facing error (5xx, client gone, proxy closed).
    fn judge_downstream(&mut self, conn: ConnId, index: u32) -> Option<Verdict> {
        self.claim_orphan_attempt(conn, index);
        let c = self.conns.get(&conn)?.clone();
        let e = c.ex(index)?;
        let d = Down::new(&c, e, self.now);
        let mut evidence = base_evidence(&c, e, Party::Client, Party::Proxy);
        let attempt = e.attempts.last().copied().and_then(|a| self.attempt(a));
        // A guessed link to an attempt that succeeded cannot explain a 5xx: the request may
        // never have gone upstream at all. Judge it as unlinked first.
        let contradicted = attempt.is_some_and(|(_, ue, proven)| {
            !proven && ue.status().is_some_and(|s| s < 500) && d.status.is_some_and(|s| s >= 500)
        }) && self.rule_on(Rule::UncertainLink);
        let unlinked = if contradicted {
            Some(self.judge_unlinked(&d)).filter(|f| f.cause.is_some())
        } else {
            None
        };
        let attempt = if unlinked.is_some() {
            None
        } else {
            e.attempts.last().copied().and_then(|a| self.attempt(a))
        };
        let mut link_proven = true;
        let f = match attempt {
            _ if unlinked.is_some() => unlinked.unwrap_or_default(),
            Some((uc, ue, proven)) => {
                link_proven = proven;
                evidence.extend(base_evidence(uc, ue, Party::Proxy, Party::Upstream));
                let mut f = self.judge_linked(&d, uc, ue, proven);
                f.upstream.get_or_insert_with(|| upstream_of(uc, ue));
                f
            }
            None => self.judge_unlinked(&d),
        };
        let said = e.res.as_ref().map(|r| {
            let page = r
                .body_start
                .as_deref()
                .and_then(Proxy::from_error_page)
                .map(|p| format!("{} (its error page)", p.name()));
            [r.server.clone().or_else(|| r.via.clone()), page]
        });
        for s in said.into_iter().flatten().flatten() {
            if !self.obs.proxy_software.contains(&s) {
                self.obs.proxy_software.push(s);
            }
        }
        evidence.extend(f.evidence);
        evidence.sort_by_key(|x| x.ts_ns);
        Some(Verdict {
            cause: f.cause.unwrap_or(Cause::Unexplained),
            subcause: f.subcause,
            confidence: if f.probable || !link_proven {
                Confidence::Probable
            } else {
                Confidence::Proven
            },
            status: d.status,
            ts_ns: d.err_ns,
            downstream: Some(downstream(&c, e)),
            upstream: f.upstream,
            request_id: e.req.as_ref().and_then(|r| r.request_id.clone()),
            idempotent: e.req.as_ref().map(crate::http::RequestHead::idempotent),
            summary: f.summary,
            reason: f.reason,
            evidence,
            process: None,
            link_guessed: !link_proven,
        })
    }

    /// A client-facing error whose upstream attempt is known.
    fn judge_linked(&self, d: &Down, uc: &CConn, ue: &Ex, link_proven: bool) -> Finding {
        if d.client_gone && self.rule_on(Rule::ClientAbort) {
            return rules::client_abort::with_attempt(d, uc);
        }
        match ue.status() {
            Some(us) if us >= 500 && self.rule_on(Rule::UpstreamGenerated) => {
                return rules::upstream_generated::passed_on(d, uc, us);
            }
            Some(us) if us < 500 => {
                return rules::uncertain_link::contradicted(
                    d,
                    uc,
                    us,
                    link_proven || !self.rule_on(Rule::UncertainLink),
                );
            }
            Some(_) => return rules::unexplained::attempt_unjudged(d, uc),
            None => {}
        }
        if let Some(f) =
            classify_attempt(uc, ue, self.habit(uc), self.early_idle(uc), &self.rules_off)
        {
            return attempt_finding(d, uc, ue, f);
        }
        if d.status == Some(504) && self.rule_on(Rule::ProxyTimeout) {
            return rules::proxy_timeout::answered_504(d, uc, ue);
        }
        rules::unexplained::attempt_still_open(d, uc)
    }

    /// A client-facing error no upstream attempt was linked to.
    fn judge_unlinked(&mut self, d: &Down) -> Finding {
        if d.client_gone && self.rule_on(Rule::ClientAbort) {
            return rules::client_abort::without_attempt(d);
        }
        if self.rule_on(Rule::UpstreamRefused) {
            if let Some(f) = self.refused_while_waiting(d) {
                return f;
            }
        }
        if self.rule_on(Rule::ConnectTimeout) {
            if let Some(f) = self.unanswered_while_waiting(d) {
                return f;
            }
        }
        if self.rule_on(Rule::RequestNeverSent) {
            if let Some(f) = self.never_sent(d) {
                return f;
            }
        }
        rules::unexplained::nothing_in_sight(d, self.roles.knows_upstreams())
    }

    /// How this upstream was seen closing idle connections so far: its idle timer (from
    /// its idle closes, or its `Keep-Alive` header) and whether it closes right after
    /// every response.
    pub(super) fn habit(&self, c: &CConn) -> Habit {
        let s = c.info.server;
        let samples = self.obs.upstream_idle_closes.get(&s).map_or(0, Vec::len);
        let header = self.obs.keep_alive_header.get(&s).copied();
        // The window only changes with new samples: recompute then, not per verdict.
        let cached = self.idle_limits.borrow().get(&s).copied();
        let timer = match cached {
            Some((n, h, timer)) if n == samples && h == header => timer,
            _ => {
                let timer = IdleTimer::learn(
                    self.obs
                        .upstream_idle_closes
                        .get(&s)
                        .map_or(&[][..], Vec::as_slice),
                    header,
                );
                self.idle_limits
                    .borrow_mut()
                    .insert(s, (samples, header, timer));
                timer
            }
        };
        let (closed, total) = self
            .obs
            .close_after_response
            .get(&s)
            .copied()
            .unwrap_or((0, 0));
        Habit {
            timer,
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
        let mut evidence = base_evidence(c, e, Party::Proxy, Party::Upstream);
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
            link_guessed: false,
        };
        let mut tail = String::new();
        if let Some(((dc, di), proven)) = e.serves {
            if let Some(d) = self.conns.get(&dc) {
                if let Some(x) = d.ex(di) {
                    v.downstream = Some(downstream(d, x));
                    v.status = x.status();
                    evidence.extend(base_evidence(d, x, Party::Client, Party::Proxy));
                    let retried = x.attempts.last() != Some(&(conn, index));
                    tail = match x.status() {
                        Some(s) if s < 500 && retried => {
                            format!("; the proxy retried and the client got {s}")
                        }
                        Some(s) if s < 500 && proven => {
                            format!("; the client got {s} (the proxy retried where the capture did not see it)")
                        }
                        Some(s) if s < 500 => format!(
                            "; linked by its request line alone to a client that got {s}, so the link is uncertain"
                        ),
                        Some(s) => format!("; the client got {s}"),
                        None => String::new(),
                    };
                    if !proven {
                        v.confidence = Confidence::Probable;
                        v.link_guessed = true;
                    }
                }
            }
        } else {
            tail = "; the client side of this request was not seen (TLS or not captured)".into();
        }
        if let Some(us) = e.status() {
            if us < 500 || !self.rule_on(Rule::UpstreamGenerated) {
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
            let f = classify_attempt(c, e, self.habit(c), self.early_idle(c), &self.rules_off)?;
            up.fin_to_request_ms = f.fin_to_request_ns.map(ms);
            v.cause = f.cause;
            v.subcause = f.subcause;
            if !f.confident {
                v.confidence = Confidence::Probable;
            }
            v.ts_ns = f.ts;
            v.summary = format!("{}{tail}", f.sentence);
            v.reason = f.doubt;
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
}

/// What an attempt rule concluded, as the client-facing verdict.
fn attempt_finding(d: &Down, uc: &CConn, ue: &Ex, f: AttemptFailure) -> Finding {
    let mut up = upstream_of(uc, ue);
    up.fin_to_request_ms = f.fin_to_request_ns.map(ms);
    if f.cause == Cause::ProxyTimeout && d.status != Some(504) {
        return Finding {
            reason: Some(format!(
                "the proxy closed the upstream connection itself after {:.1} ms and answered {}",
                ms(f.proxy_after_ns.unwrap_or(0)),
                d.what
            )),
            summary: format!("the proxy gave up on {} and answered {}", uc.name(), d.what),
            upstream: Some(up),
            ..Finding::default()
        };
    }
    Finding {
        cause: Some(f.cause),
        subcause: f.subcause,
        probable: !f.confident,
        summary: format!("{}; the client got {}", f.sentence, d.what),
        reason: f.doubt,
        upstream: Some(up),
        ..Finding::default()
    }
}

impl Correlator {
    /// Connections that never carried a request: refused, or SYNs without answer.
    fn check_connect(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.claimed || c.established_ns.is_some() {
            return;
        }
        let role = self.roles.role(&c.info);
        if matches!(role, Role::Down | Role::Other) {
            return;
        }
        let v = if c.refused_ns.is_some() && self.rule_on(Rule::UpstreamRefused) {
            rules::upstream_refused::connection(c, role)
        } else if c.refused_ns.is_none() && c.syn_count >= 2 && self.rule_on(Rule::ConnectTimeout) {
            rules::connect_timeout::connection(c, role)
        } else {
            return;
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.claimed = true;
        }
        self.verdicts_out.push(v);
    }
}
