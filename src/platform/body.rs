//! The request body as the runtime streams it, read chunk by chunk into one buffer and
//! dropped (the stream cancelled) as soon as it passes the limit the core gave: a
//! chunked upload without a Content-Length is never buffered whole.

use futures::StreamExt;
use js_sys::Uint8Array;
use wasm_bindgen::JsCast;
use wasm_streams::readable::sys::ReadableStream;

use crate::http::{BodyError, RequestBody};

pub struct StreamedBody {
    stream: Option<ReadableStream>,
    /// The Content-Length the client declared, if any.
    declared: Option<usize>,
}

impl StreamedBody {
    pub fn new(stream: Option<ReadableStream>, declared: Option<usize>) -> Self {
        Self { stream, declared }
    }
}

impl RequestBody for StreamedBody {
    async fn read_up_to(self, limit: usize) -> Result<Vec<u8>, BodyError> {
        if self.declared.is_some_and(|len| len > limit) {
            return Err(BodyError::TooLarge);
        }
        let Some(stream) = self.stream else {
            return Ok(Vec::new());
        };
        // Dropping the reader, on any early return, cancels the stream.
        let mut chunks = wasm_streams::ReadableStream::from_raw(stream)
            .try_into_stream()
            .map_err(|_| BodyError::Unreadable)?;
        // A declared length is reserved at once, so the buffer never grows by copying.
        let mut body = Vec::with_capacity(self.declared.unwrap_or(0).min(limit));
        while let Some(chunk) = chunks.next().await {
            // An error, an abort included, is never taken for the end of the body: a
            // truncated value must not be stored.
            let chunk = chunk
                .ok()
                .and_then(|c| c.dyn_into::<Uint8Array>().ok())
                .ok_or(BodyError::Unreadable)?;
            let start = body.len();
            let end = start + chunk.length() as usize;
            if end > limit {
                return Err(BodyError::TooLarge);
            }
            body.resize(end, 0);
            chunk.copy_to(&mut body[start..]);
        }
        Ok(body)
    }
}
