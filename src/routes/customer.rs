//! Handlers of the customer API: parse the input, check who may do it, call
//! [`crate::customers`].

use serde_json::json;

use super::Ctx;
use crate::auth::{Role, OWNER_PROTECTED_FIELDS};
use crate::customers::{self, Answer, Loaded};
use crate::domain::json::JsonObject;
use crate::domain::{CustomerId, Email};
use crate::http::ApiError;
use crate::http::{ApiRequest, ApiResponse};
use crate::migration::state::coordinator::PhaseRegister;
use crate::store::KvStore;
use crate::writes::Writers;

fn parse_id(raw: &str) -> Result<CustomerId, ApiError> {
    CustomerId::parse(raw).map_err(|m| ApiError::bad_request("invalid_customer_id", m))
}

fn record_response(status: u16, loaded: &Loaded) -> ApiResponse {
    ApiResponse::record(status, &loaded.record)
}

fn answer(read: Answer) -> ApiResponse {
    match read {
        Answer::AsStored(text) => ApiResponse::record_text(200, text),
        Answer::Loaded(loaded) => record_response(200, &loaded),
    }
}

pub async fn me<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
) -> Result<ApiResponse, ApiError> {
    // A service or admin token's subject need not be a customer id.
    let id = CustomerId::parse(&ctx.caller.subject)
        .map_err(|_| ApiError::customer_not_found(&ctx.caller.subject))?;
    Ok(answer(customers::get_answer(ctx.plane, &id).await?))
}

pub async fn get<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    raw_id: &str,
) -> Result<ApiResponse, ApiError> {
    let id = parse_id(raw_id)?;
    ctx.caller.require_owner_or_privileged(&id)?;
    Ok(answer(customers::get_answer(ctx.plane, &id).await?))
}

pub async fn by_email<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    raw_email: &str,
) -> Result<ApiResponse, ApiError> {
    let email = Email::parse(raw_email).map_err(|m| ApiError::bad_request("invalid_email", m))?;
    let loaded = customers::get_by_email(ctx.plane, &email, raw_email).await?;
    // Answer 404, not 403, to a customer asking for another's email: the difference
    // would tell them which addresses have accounts.
    if ctx
        .caller
        .require_owner_or_privileged(loaded.record.id())
        .is_err()
    {
        return Err(ApiError::new(
            404,
            "customer_not_found",
            "no customer with that email",
        ));
    }
    Ok(record_response(200, &loaded))
}

pub async fn create<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    ctx.caller.require_privileged()?;
    let body = request.json_object()?;
    let record = ctx.writing().create(body).await?;
    Ok(ApiResponse::record(201, &record))
}

pub async fn ensure<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    ctx.caller.require_privileged()?;
    let body = request.json_object()?;
    let done = ctx.writing().ensure(body).await?;
    let status = if done.created { 201 } else { 200 };
    Ok(ApiResponse::record(status, &done.record))
}

pub async fn update<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    raw_id: &str,
    request: &ApiRequest,
) -> Result<ApiResponse, ApiError> {
    let id = parse_id(raw_id)?;
    ctx.caller.require_owner_or_privileged(&id)?;
    let patch = request.json_object()?;
    if ctx.caller.role == Role::Customer {
        refuse_protected_fields(&patch)?;
    }
    let record = ctx.writing().update(&id, patch).await?;
    Ok(ApiResponse::record(200, &record))
}

pub async fn delete<S: KvStore, R: PhaseRegister, W: Writers>(
    ctx: &Ctx<'_, S, R, W>,
    raw_id: &str,
) -> Result<ApiResponse, ApiError> {
    let id = parse_id(raw_id)?;
    ctx.caller.require_privileged()?;
    ctx.writing().delete(&id).await?;
    Ok(ApiResponse::ok(
        json!({ "deleted": true, "customerId": id.as_str() }),
    ))
}

fn refuse_protected_fields(patch: &JsonObject) -> Result<(), ApiError> {
    match OWNER_PROTECTED_FIELDS
        .iter()
        .find(|f| patch.contains_key(**f))
    {
        Some(field) => Err(ApiError::forbidden(format!(
            "customers may not change {field}"
        ))),
        None => Ok(()),
    }
}
