//! A read hit and nothing else: an HS256 bearer token checked, one KV read, its bytes
//! answered (see Cargo.toml).

use jwt_simple::prelude::*;
use worker::*;

fn answer(status: u16, body: &str) -> Result<Response> {
    let headers = Headers::new();
    headers.set("Content-Type", "application/json")?;
    Ok(Response::ok(body)?
        .with_status(status)
        .with_headers(headers))
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let path = req.path();
    if path == "/health" {
        return answer(200, r#"{"status":"ok"}"#);
    }
    let Some(id) = path.strip_prefix("/customer/") else {
        return answer(404, r#"{"error":"not_found"}"#);
    };
    let secret = env
        .secret("JWT_SECRET")
        .or_else(|_| env.var("JWT_SECRET"))?
        .to_string();
    let token = req.headers().get("Authorization")?.unwrap_or_default();
    let token = token.strip_prefix("Bearer ").unwrap_or_default();
    if HS256Key::from_bytes(secret.as_bytes())
        .verify_token::<NoCustomClaims>(token, None)
        .is_err()
    {
        return answer(401, r#"{"error":"invalid_token"}"#);
    }
    // With its metadata, as the product reads (and as local KV then also looks the
    // metadata up); the benchmark's records carry none.
    let (value, _metadata) = env
        .kv("CUSTOMER_KV")?
        .get(&format!("customer_{id}"))
        .bytes_with_metadata::<()>()
        .await?;
    match value {
        Some(bytes) => {
            let headers = Headers::new();
            headers.set("Content-Type", "application/json")?;
            Ok(Response::from_bytes(bytes)?.with_headers(headers))
        }
        None => answer(404, r#"{"error":"not_found"}"#),
    }
}
