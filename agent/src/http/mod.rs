//! HTTP/1.x on a connection: message heads ([`head`]), message boundaries ([`framer`]) and
//! the exchanges of one connection ([`conn`]).

pub mod conn;
pub mod framer;
pub mod h2;
pub mod head;

pub use conn::{HttpConn, HttpEvent};
pub use head::{RequestHead, ResponseHead};
