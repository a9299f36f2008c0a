//! Sparse captures: a 5xx whose request the kernel's selection skipped is linked to its
//! upstream attempt by timing alone, when exactly one attempt fits.

use super::state::ExRef;
use super::{Correlator, Role};
use crate::flow::ConnId;

/// How long before a 5xx its upstream attempt may have failed, for a link by timing alone.
const ORPHAN_WINDOW_NS: i64 = 50_000_000;

impl Correlator {
    /// Sparse capture: a 5xx whose request was skipped (a response with no request seen)
    /// takes the one upstream attempt that failed, unlinked, in the 50 ms before it. The
    /// link is by timing only, so the verdict stays probable; with two candidates, none.
    pub(super) fn claim_orphan_attempt(&mut self, conn: ConnId, index: u32) {
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

    pub(super) fn link_orphan(&mut self, down: ExRef, up: ExRef) {
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
    pub(super) fn claim_skipped_5xx(&mut self, conn: ConnId, index: u32) -> bool {
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
}
