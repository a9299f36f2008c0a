//! Which proxy and which upstream server answered, from what the capture shows of them: a
//! `Server` or `Via` header, the proxy's own error page, a `Keep-Alive` header without
//! `Server` (Node), and the process name the kernel probe gives.

/// A proxy tracer knows the settings of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proxy {
    Traefik1,
    Traefik,
    Nginx,
    Envoy,
    HaProxy,
    Caddy,
    Apache,
}

/// Every proxy, in the order `--all` lists them.
pub const PROXIES: [Proxy; 7] = [
    Proxy::Traefik1,
    Proxy::Traefik,
    Proxy::Nginx,
    Proxy::Envoy,
    Proxy::HaProxy,
    Proxy::Caddy,
    Proxy::Apache,
];

/// An upstream server tracer knows the keep-alive setting of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Upstream {
    Uwsgi,
    Gunicorn,
    Node,
    Apache,
}

/// Every upstream, in the order `--all` lists them.
pub const UPSTREAMS: [Upstream; 4] = [
    Upstream::Uwsgi,
    Upstream::Gunicorn,
    Upstream::Node,
    Upstream::Apache,
];

impl Proxy {
    /// From a `Server` or `Via` header value of the proxy's own response
    /// (`nginx/1.22.1`, `Caddy`, `1.1 Caddy`, `Apache/2.4.62 (Debian)`).
    #[must_use]
    pub fn from_header(s: &str) -> Option<Proxy> {
        let l = s.to_ascii_lowercase();
        if l.contains("traefik") {
            Some(if l.contains("1.7") || l.contains("/1.") {
                Proxy::Traefik1
            } else {
                Proxy::Traefik
            })
        } else if l.contains("nginx") || l.contains("openresty") {
            Some(Proxy::Nginx)
        } else if l.contains("envoy") || l.contains("istio") {
            Some(Proxy::Envoy)
        } else if l.contains("haproxy") {
            Some(Proxy::HaProxy)
        } else if l.contains("caddy") {
            Some(Proxy::Caddy)
        } else if l.contains("apache") && !l.contains("coyote") {
            Some(Proxy::Apache)
        } else {
            None
        }
    }

    /// From the body of an error response the proxy made itself: nginx signs its pages
    /// (`<hr><center>nginx/1.22.1</center>`), HAProxy's and Apache's say what they are in
    /// words of their own.
    #[must_use]
    pub fn from_error_page(body: &[u8]) -> Option<Proxy> {
        let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
        if has(b"<center>nginx") || has(b"<center>openresty") {
            Some(Proxy::Nginx)
        } else if has(b"<title>502 Proxy Error</title>") || has(b"<h1>Proxy Error</h1>") {
            Some(Proxy::Apache)
        } else if has(b"The server returned an invalid or incomplete response.")
            || has(b"The server didn't respond in time.")
            || has(b"No server is available to handle this request.")
        {
            Some(Proxy::HaProxy)
        } else {
            None
        }
    }

    /// From the name of the process that owned the proxy's upstream socket (`caddy[42]`,
    /// `nginx`, `apache2`).
    #[must_use]
    pub fn from_process(p: &str) -> Option<Proxy> {
        let comm = p.split('[').next().unwrap_or(p).trim().to_ascii_lowercase();
        match comm.as_str() {
            "caddy" => Some(Proxy::Caddy),
            "nginx" | "openresty" => Some(Proxy::Nginx),
            "haproxy" => Some(Proxy::HaProxy),
            "envoy" => Some(Proxy::Envoy),
            "traefik" => Some(Proxy::Traefik),
            "httpd" | "apache2" => Some(Proxy::Apache),
            _ => None,
        }
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Proxy::Traefik1 => "Traefik 1.7",
            Proxy::Traefik => "Traefik 2/3",
            Proxy::Nginx => "nginx",
            Proxy::Envoy => "Envoy",
            Proxy::HaProxy => "HAProxy",
            Proxy::Caddy => "Caddy",
            Proxy::Apache => "Apache httpd (mod_proxy)",
        }
    }
}

impl Upstream {
    /// From an upstream response's `Server` header and `Keep-Alive` parameters: gunicorn,
    /// uwsgi and Apache name themselves; Node sends no `Server` but a `Keep-Alive:
    /// timeout=N` without the `max=N` Apache adds.
    #[must_use]
    pub fn from_response(
        server: Option<&str>,
        keep_alive_timeout: Option<u32>,
        keep_alive_max: Option<u32>,
    ) -> Option<Upstream> {
        match server.map(str::to_ascii_lowercase) {
            Some(s) if s.contains("gunicorn") => Some(Upstream::Gunicorn),
            Some(s) if s.contains("uwsgi") => Some(Upstream::Uwsgi),
            Some(s) if s.contains("apache") && !s.contains("coyote") => Some(Upstream::Apache),
            Some(_) => None,
            None if keep_alive_timeout.is_some() && keep_alive_max.is_none() => {
                Some(Upstream::Node)
            }
            None => None,
        }
    }

    /// From what [`crate::correlate::Observations::upstream_software`] holds: a `Server`
    /// value, or the name [`Upstream::from_response`] gave.
    #[must_use]
    pub fn from_said(s: &str) -> Option<Upstream> {
        if s.to_ascii_lowercase().starts_with("node.js") {
            return Some(Upstream::Node);
        }
        Upstream::from_response(Some(s), None, None)
    }

    /// The setting that keeps its connections open longer than the proxy's idle timeout.
    #[must_use]
    pub fn fix(self) -> &'static str {
        match self {
            Upstream::Uwsgi => "uwsgi: `http-keepalive = 1` (HTTP router) so connections stay open between requests.",
            Upstream::Gunicorn => "gunicorn: `--keep-alive N` with N above the proxy's idle timeout (default 2 s).",
            Upstream::Node => "Node.js: `server.keepAliveTimeout` above the proxy's idle timeout (and `server.headersTimeout` above that); Node closes about 1 s after it.",
            Upstream::Apache => "Apache httpd: `KeepAliveTimeout` above the proxy's idle timeout.",
        }
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Upstream::Uwsgi => "uwsgi",
            Upstream::Gunicorn => "gunicorn",
            Upstream::Node => "Node.js",
            Upstream::Apache => "Apache",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::parse_response;

    /// Response heads and pages as the lab's real proxies and upstreams sent them
    /// (`tests/fixtures`: nginx-node, haproxy-gunicorn, haproxy-node, caddy-node, seed).
    const NGINX_502: &[u8] = b"HTTP/1.1 502 Bad Gateway\r\nServer: nginx/1.22.1\r\nDate: Sun, 29 Nov 2026 12:46:45 GMT\r\nContent-Type: text/html\r\nContent-Length: 157\r\nConnection: close\r\n\r\n<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.22.1</center>\r\n</body>\r\n</html>\r\n";
    const HAPROXY_502: &[u8] = b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 107\r\ncache-control: no-cache\r\ncontent-type: text/html\r\nconnection: close\r\n\r\n<html><body><h1>502 Bad Gateway</h1>\nThe server returned an invalid or incomplete response.\n</body></html>\n";
    const GUNICORN_200: &[u8] = b"HTTP/1.1 200 OK\r\nServer: gunicorn\r\nDate: Wed, 25 Nov 2026 20:52:48 GMT\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: 26\r\n\r\n";
    const NODE_200: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 26\r\nDate: Sun, 29 Nov 2026 12:46:44 GMT\r\nConnection: keep-alive\r\nKeep-Alive: timeout=0\r\n\r\n";
    const UWSGI_200: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 26\r\n\r\n";
    /// Apache httpd's mod_proxy 502 page, as Apache/2.4.10 sent it (quoted in a public
    /// bug report; the lab runs no Apache).
    const APACHE_PAGE: &[u8] = b"<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head>\n<title>502 Proxy Error</title>\n</head><body>\n<h1>Proxy Error</h1>\n<p>The proxy server received an invalid\nresponse from an upstream server.<br />\n";

    fn split(r: &[u8]) -> (&[u8], &[u8]) {
        let at = r.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        r.split_at(at)
    }

    #[test]
    fn proxies_are_recognised_from_their_server_header() {
        let (head, _) = split(NGINX_502);
        let h = parse_response(head).unwrap();
        assert_eq!(
            Proxy::from_header(h.server.as_deref().unwrap()),
            Some(Proxy::Nginx)
        );
        assert_eq!(Proxy::from_header("Caddy"), Some(Proxy::Caddy));
        assert_eq!(Proxy::from_header("1.1 Caddy"), Some(Proxy::Caddy));
        assert_eq!(
            Proxy::from_header("Apache/2.4.62 (Debian)"),
            Some(Proxy::Apache)
        );
        assert_eq!(Proxy::from_header("envoy"), Some(Proxy::Envoy));
        assert_eq!(Proxy::from_header("gunicorn"), None);
        assert_eq!(Proxy::from_header("Apache-Coyote/1.1"), None);
    }

    #[test]
    fn proxies_are_recognised_from_their_error_pages() {
        let (_, body) = split(NGINX_502);
        assert_eq!(Proxy::from_error_page(body), Some(Proxy::Nginx));
        let (head, body) = split(HAPROXY_502);
        // HAProxy names itself nowhere in its head.
        assert_eq!(parse_response(head).unwrap().server, None);
        assert_eq!(Proxy::from_error_page(body), Some(Proxy::HaProxy));
        assert_eq!(Proxy::from_error_page(APACHE_PAGE), Some(Proxy::Apache));
        assert_eq!(Proxy::from_error_page(b"{\"error\":\"bad gateway\"}"), None);
        assert_eq!(Proxy::from_error_page(b""), None);
    }

    #[test]
    fn proxies_are_recognised_from_the_process_the_probe_names() {
        assert_eq!(Proxy::from_process("caddy[4242]"), Some(Proxy::Caddy));
        assert_eq!(Proxy::from_process("nginx"), Some(Proxy::Nginx));
        assert_eq!(Proxy::from_process("haproxy[7]"), Some(Proxy::HaProxy));
        assert_eq!(Proxy::from_process("apache2[9]"), Some(Proxy::Apache));
        assert_eq!(Proxy::from_process("python3[1]"), None);
    }

    #[test]
    fn upstreams_are_recognised_from_their_responses() {
        let see = |r: &[u8]| {
            let h = parse_response(split(r).0).unwrap();
            Upstream::from_response(
                h.server.as_deref(),
                h.keep_alive_timeout_s,
                h.keep_alive_max,
            )
        };
        assert_eq!(see(GUNICORN_200), Some(Upstream::Gunicorn));
        assert_eq!(
            Upstream::from_said("Node.js (Keep-Alive: timeout=0, no Server)"),
            Some(Upstream::Node)
        );
        assert_eq!(Upstream::from_said("gunicorn"), Some(Upstream::Gunicorn));
        assert_eq!(see(NODE_200), Some(Upstream::Node));
        // uwsgi says nothing of itself.
        assert_eq!(see(UWSGI_200), None);
        // Apache sends `Keep-Alive: timeout=5, max=100` and names itself.
        assert_eq!(
            see(b"HTTP/1.1 200 OK\r\nServer: Apache/2.4.62 (Debian)\r\nKeep-Alive: timeout=5, max=100\r\n\r\n"),
            Some(Upstream::Apache)
        );
        assert_eq!(
            see(b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5, max=100\r\n\r\n"),
            None
        );
    }
}
