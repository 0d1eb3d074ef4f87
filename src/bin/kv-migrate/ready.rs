//! `kv-migrate ready`: whether the worker reaches every binding it needs
//! (`GET /admin/migrate/ready`), each binding's state, and an exit code a deploy script
//! can stop on (9 when not ready).

use customer_kv_migration::api::{Probe, ReadyView};

use crate::client::Client;
use crate::commands::{typed, Output};
use crate::outcome::{CommandResult, Failure};

const PATH: &str = "/admin/migrate/ready";

pub fn ready(client: &Client, out: &Output) -> CommandResult {
    let answer = client.get(PATH, &[])?;
    // 503 is the worker's answer for "a binding failed", with the same body.
    if answer.status != 200 && answer.status != 503 {
        return Err(answer.failure());
    }
    let raw = answer.json()?;
    let view: ReadyView = typed(&raw)?;
    out.show(&raw, &view, render);
    if view.ready {
        return Ok(());
    }
    let failed: Vec<&str> = bindings(&view)
        .into_iter()
        .filter(|(_, probe)| !probe.ok)
        .map(|(name, _)| name)
        .collect();
    Err(Failure::NotReady(format!(
        "not ready: {} failed",
        failed.join(", ")
    )))
}

fn bindings(view: &ReadyView) -> [(&'static str, &Probe); 3] {
    [
        ("OTP_AUTH_KV (old store)", &view.old_store),
        ("CUSTOMER_KV (new store)", &view.new_store),
        ("COORDINATOR", &view.coordinator),
    ]
}

fn render(view: &ReadyView) -> String {
    let mut lines = vec![if view.ready { "ready" } else { "NOT READY" }.to_owned()];
    for (name, probe) in bindings(view) {
        let state = match (probe.ok, &probe.error) {
            (true, _) => "ok".to_owned(),
            (false, Some(error)) => format!("FAILED ({error})"),
            (false, None) => "FAILED".to_owned(),
        };
        lines.push(format!("  {name:<26} {state}"));
    }
    let queue = if view.queue.bound {
        "bound: the backfill fans out"
    } else {
        "not bound: the cron copies"
    };
    lines.push(format!("  {:<26} {queue}", "BACKFILL_QUEUE"));
    let sign_in = &view.admin_sign_in;
    let warning = if sign_in.shares_otp_secret {
        " (WARNING: the OTP service's JWT_SECRET opens /admin; set up Access or ADMIN_JWT_SECRET)"
    } else {
        ""
    };
    if !sign_in.method.is_empty() {
        lines.push(format!(
            "  {:<26} {}{warning}",
            "admin sign-in", sign_in.method
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::tests::client;
    use crate::fake_worker::answering;

    const READY: &str = r#"{"ready":true,"oldStore":{"ok":true},"newStore":{"ok":true},"coordinator":{"ok":true},"queue":{"bound":false}}"#;
    const NOT_READY: &str = r#"{"ready":false,"oldStore":{"ok":true},"newStore":{"ok":true},"coordinator":{"ok":false,"error":"coordinator failed"},"queue":{"bound":true}}"#;

    const PEOPLE: Output = Output { json: false };

    #[test]
    fn a_ready_worker_shows_each_binding_and_succeeds() {
        let (url, heads) = answering(vec![(200, READY.to_owned())]);
        ready(&client(url, None), &PEOPLE).unwrap();
        let head = heads.recv().unwrap();
        assert!(head.starts_with("get /admin/migrate/ready "), "{head}");
        assert!(head.contains("authorization: bearer the.admin.jwt"));
        let view: ReadyView = serde_json::from_str(READY).unwrap();
        let shown = render(&view);
        assert!(shown.starts_with("ready\n"), "{shown}");
        assert!(shown.contains("OTP_AUTH_KV (old store)    ok"), "{shown}");
        assert!(shown.contains("COORDINATOR                ok"), "{shown}");
        assert!(shown.contains("not bound: the cron copies"), "{shown}");
    }

    #[test]
    fn a_worker_not_ready_names_what_failed_and_exits_9() {
        // A 503 is retried like any read: a binding that fails five times running is
        // not a blip.
        let (url, heads) = answering(vec![(503, NOT_READY.to_owned()); 5]);
        let failure = ready(&client(url, None), &PEOPLE).unwrap_err();
        assert_eq!(failure.exit_code(), 9);
        assert_eq!(failure.to_string(), "not ready: COORDINATOR failed");
        assert_eq!(heads.iter().take(5).count(), 5);
        let view: ReadyView = serde_json::from_str(NOT_READY).unwrap();
        let shown = render(&view);
        assert!(shown.starts_with("NOT READY\n"), "{shown}");
        assert!(shown.contains("COORDINATOR                FAILED (coordinator failed)"));
        assert!(shown.contains("CUSTOMER_KV (new store)    ok"), "{shown}");
    }

    #[test]
    fn a_refused_token_is_unauthorized_not_unready() {
        let refused = r#"{"error":{"code":"forbidden","message":"admins only"}}"#;
        let (url, _heads) = answering(vec![(403, refused.to_owned())]);
        let failure = ready(&client(url, None), &PEOPLE).unwrap_err();
        assert_eq!(failure.exit_code(), 4);
    }
}
