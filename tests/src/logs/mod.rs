//! Parsers for the proxies' own logs: the lab's ground truth rests on them.
pub mod caddy;
pub mod fields;
pub mod haproxy;
pub mod nginx;
