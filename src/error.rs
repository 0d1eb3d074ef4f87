//! The one error type handlers return; it becomes `{"error": {"code", "message"}}`.

use serde_json::json;

use crate::domain::RecordError;
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }

    pub fn invalid_body(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_body", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "forbidden", message)
    }

    pub fn customer_not_found(id: &str) -> Self {
        Self::new(
            404,
            "customer_not_found",
            format!("no customer with id '{id}'"),
        )
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(409, code, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "internal_error", message)
    }

    pub fn body(&self) -> serde_json::Value {
        json!({ "error": { "code": self.code, "message": self.message } })
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        Self::new(503, "store_unavailable", err.to_string())
    }
}

impl From<RecordError> for ApiError {
    fn from(err: RecordError) -> Self {
        match err {
            RecordError::Corrupt(message) => Self::new(500, "corrupt_record", message),
            RecordError::InvalidField { field, message } => {
                let code = match field.as_str() {
                    "email" => "invalid_email",
                    "customerId" => "invalid_customer_id",
                    _ => "invalid_body",
                };
                Self::bad_request(code, message)
            }
        }
    }
}
