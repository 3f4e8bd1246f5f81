//! The crate's error type: what `serve` and the [`crate::Handle`] calls can
//! fail with.

use std::fmt;
use std::io;

use crate::config::ConfigError;
use crate::protocol::ProtocolError;

/// Why a hub could not start or a request to it failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A setting is invalid; the hub did not start.
    Config(ConfigError),
    /// The socket could not be bound or the hub thread not started.
    Io(io::Error),
    /// The hub refused the request (a bad event, a reserved type, …).
    Protocol(ProtocolError),
    /// The hub has stopped or is stopping.
    Stopped,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => e.fmt(f),
            Self::Io(e) => write!(f, "i/o error: {e}"),
            Self::Protocol(e) => e.fmt(f),
            Self::Stopped => f.write_str("the hub has stopped"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Config(e) => Some(e),
            Self::Io(e) => Some(e),
            Self::Protocol(e) => Some(e),
            Self::Stopped => None,
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        Self::Protocol(e)
    }
}

impl From<crate::hub::HubGone> for Error {
    fn from(_: crate::hub::HubGone) -> Self {
        Self::Stopped
    }
}
