//! Request bodies not yet read. The core decides how many bytes a route may receive and
//! when; the adapter reads the body chunk by chunk and stops at that limit, so an
//! oversized body (declared or chunked) is never held in memory whole.

/// Largest request body accepted before authentication, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Largest value Workers KV holds (25 MiB), the most a raw value import may carry.
pub const MAX_VALUE_BYTES: usize = 25 * 1024 * 1024;

/// How many bytes a route's body may hold, and whether the caller must be known first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLimit {
    /// Checked before authentication: cheap to refuse, so any caller may be refused.
    BeforeAuth(usize),
    /// Read only once the token names an admin: a body this large is memory no one
    /// else may make the worker hold.
    AfterAdmin(usize),
}

impl BodyLimit {
    /// What every route takes unless it says otherwise (and what a request no route
    /// takes is held to).
    pub const DEFAULT: BodyLimit = BodyLimit::BeforeAuth(MAX_BODY_BYTES);

    pub fn bytes(self) -> usize {
        match self {
            BodyLimit::BeforeAuth(bytes) | BodyLimit::AfterAdmin(bytes) => bytes,
        }
    }
}

/// Why a body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// It holds more than the limit (declared, or found while reading); the rest was not
    /// read.
    TooLarge,
    /// The runtime failed to deliver it.
    Unreadable,
}

/// A request body to be read once, up to a limit.
#[allow(async_fn_in_trait)]
pub trait RequestBody {
    /// The whole body if it holds at most `limit` bytes; `TooLarge` as soon as it is
    /// known to hold more, without reading the rest.
    async fn read_up_to(self, limit: usize) -> Result<Vec<u8>, BodyError>;
}

/// A body already in memory (native tests, the benches).
impl RequestBody for Vec<u8> {
    async fn read_up_to(self, limit: usize) -> Result<Vec<u8>, BodyError> {
        if self.len() > limit {
            return Err(BodyError::TooLarge);
        }
        Ok(self)
    }
}
