//! What each side of the proxy answered: the statuses of every response seen, counted per
//! server endpoint and told apart at the end by the roles learned by then (a response seen
//! before its connection's side was known counts on the side it turned out to be).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use super::{Correlator, Role};
use crate::flow::ConnInfo;

/// Per server endpoint: the last connection to it (to ask its role at the end) and the
/// statuses it answered.
pub(super) type ByServer = HashMap<SocketAddr, (ConnInfo, BTreeMap<u16, u64>)>;

/// Responses by side of the proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Responses {
    /// Status → count of the responses the proxy sent its clients.
    pub client: BTreeMap<u16, u64>,
    /// The proxy's listeners those came from, sorted.
    pub listeners: Vec<SocketAddr>,
    /// Status → count of the responses upstream servers sent the proxy.
    pub upstream: BTreeMap<u16, u64>,
    /// The upstream servers, sorted.
    pub upstreams: Vec<SocketAddr>,
}

impl Responses {
    /// Client responses in all.
    #[must_use]
    pub fn client_total(&self) -> u64 {
        self.client.values().sum()
    }

    /// Client responses with a status in `range`.
    #[must_use]
    pub fn client_in(&self, range: std::ops::RangeInclusive<u16>) -> u64 {
        self.client.range(range).map(|(_, n)| n).sum()
    }
}

/// Notes a connection to `info.server` (the one its role is asked of at the end).
pub(super) fn note<'a>(by: &'a mut ByServer, info: &ConnInfo) -> &'a mut BTreeMap<u16, u64> {
    let e = by
        .entry(info.server)
        .or_insert_with(|| (*info, BTreeMap::new()));
    e.0 = *info;
    &mut e.1
}

/// Counts one response of `info.server`.
pub(super) fn count(by: &mut ByServer, info: &ConnInfo, status: u16) {
    *note(by, info).entry(status).or_default() += 1;
}

impl Correlator {
    /// The side of the proxy `server` is on, as the roles now say: `Down` for the proxy's
    /// own listener. `Unknown` for a server no connection was seen to.
    #[must_use]
    pub fn server_role(&self, server: SocketAddr) -> Role {
        self.response_tally
            .get(&server)
            .map_or(Role::Unknown, |(info, _)| self.roles.role(info))
    }

    /// The responses seen, by side as the roles now say.
    #[must_use]
    pub fn responses(&self) -> Responses {
        let mut r = Responses::default();
        for (server, (info, statuses)) in &self.response_tally {
            let (counts, servers) = match self.roles.role(info) {
                Role::Down => (&mut r.client, &mut r.listeners),
                Role::Up => (&mut r.upstream, &mut r.upstreams),
                Role::Other | Role::Unknown => continue,
            };
            servers.push(*server);
            for (s, n) in statuses {
                *counts.entry(*s).or_default() += n;
            }
        }
        r.listeners.sort_unstable();
        r.upstreams.sort_unstable();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(c: &str, s: &str) -> ConnInfo {
        ConnInfo::for_test(c, s)
    }

    #[test]
    fn responses_are_told_apart_by_the_roles_learned_at_the_end() {
        let mut c = Correlator::new(super::super::Roles::default());
        let down = info("10.0.0.1:40000", "10.0.0.2:80");
        let up = info("10.0.0.2:50000", "10.0.0.3:9000");
        // Seen before any role was known.
        count(&mut c.response_tally, &down, 200);
        count(&mut c.response_tally, &down, 502);
        count(&mut c.response_tally, &down, 200);
        count(&mut c.response_tally, &up, 200);
        c.roles.saw(&down);
        c.roles.saw(&up);
        let r = c.responses();
        assert_eq!(r.client, BTreeMap::from([(200, 2), (502, 1)]));
        assert_eq!(r.client_total(), 3);
        assert_eq!(r.client_in(500..=599), 1);
        assert_eq!(r.listeners, vec![down.server]);
        assert_eq!(r.upstream, BTreeMap::from([(200, 1)]));
        assert_eq!(r.upstreams, vec![up.server]);
    }
}
