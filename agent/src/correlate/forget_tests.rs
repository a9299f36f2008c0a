//! What a long-running session forgets: a busy proxy's answered requests and the idle
//! closes of connections gone must not stay in the correlator's tables until their time
//! or count bounds, or its memory grows for minutes and then sits at the bounds.

use super::rules::timeline::{client, upstream, Tl, MS};

const N: u16 = 2_000;

/// `N` requests, each on its own client connection with its own id and target, forwarded
/// on its own upstream connection, answered 200; the upstream then closes its connection
/// while idle (uwsgi without keep-alive) and the proxy closes it too.
fn busy() -> Tl {
    let mut tl = Tl::warmed_up();
    for i in 0..N {
        let t = 20 * MS + i64::from(i) * 2 * MS;
        let (d, u) = (client(41_000 + i), upstream(51_000 + i));
        let rid = 100 + u32::from(i);
        tl.open(t, d);
        tl.req(t + 200, d, "POST", rid);
        tl.open(t + 300, u);
        tl.req(t + 500, u, "POST", rid);
        tl.res(t + 900, u, 200);
        tl.fin(t + 950, u, false); // the upstream's close, idle
        tl.fin(t + 960, u, true); // the proxy's
        tl.res(t + 1_000, d, 200);
        tl.fin(t + 1_100, d, true);
        tl.fin(t + 1_150, d, false);
    }
    tl
}

fn table(tables: &[(&str, usize)], name: &str) -> usize {
    tables
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no table {name}"))
}

#[test]
fn answered_requests_stop_waiting_for_an_attempt() {
    let end = 20 * MS + i64::from(N) * 2 * MS;
    // while they come, the last second's are held
    let busy_now = busy().tables_at(end);
    assert!(table(&busy_now, "correlate_pending") > 0, "{busy_now:?}");
    // ten seconds after the last: none is a candidate any more (all answered), though
    // requests may wait for an attempt for minutes
    let after = busy().tables_at(end + 10_000 * MS);
    assert_eq!(table(&after, "correlate_pending"), 0, "{after:?}");
    assert_eq!(table(&after, "correlate_answered"), 0, "{after:?}");
}

#[test]
fn idle_closes_go_with_their_connection() {
    let end = 20 * MS + i64::from(N) * 2 * MS;
    let after = busy().tables_at(end + 10_000 * MS);
    // every connection is closed and forgotten: their idle closes and the proxy's closes
    // of them serve no error any more (they were kept ten minutes, up to 16 384)
    // (the warm-up's upstream connection stays open, and the clock's)
    assert_eq!(table(&after, "correlate_conns"), 2, "{after:?}");
    assert_eq!(table(&after, "correlate_idle_closes"), 0, "{after:?}");
    assert_eq!(table(&after, "correlate_proxy_closes"), 0, "{after:?}");
    assert_eq!(table(&after, "correlate_idle_close_order"), 0, "{after:?}");
}

/// 50 requests that get no answer (the capture skipped it, or the proxy is still on them),
/// each on its own client connection, left open.
fn unanswered() -> Tl {
    let mut tl = Tl::warmed_up();
    for i in 0..50 {
        let t = 20 * MS + i64::from(i) * MS;
        let d = client(42_000 + i);
        tl.open(t, d);
        tl.req(t + 200, d, "POST", 5_000 + u32::from(i));
    }
    tl
}

#[test]
fn unanswered_requests_wait_five_minutes_for_their_attempt() {
    let at = |s: i64| table(&unanswered().tables_at(s * 1_000 * MS), "correlate_pending");
    // each is a candidate under its id and under its method and target
    assert_eq!(at(200), 100, "still waiting after 200 s");
    assert_eq!(at(310), 0, "gone after 300 s");
}
