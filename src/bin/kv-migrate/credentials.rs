//! Where the worker is and the credentials to reach it. Secrets never come from the
//! command line, where `ps` and shell history would show them: only from files and
//! environment variables.

use std::fmt;
use std::path::Path;

use crate::cli::Global;
use crate::client::mint_token;
use crate::config::{self, Profile};
use crate::outcome::{CommandResult, Failure};

const DEFAULT_URL: &str = "http://127.0.0.1:8787";

/// A secret that never shows in a `{:?}` or an error message.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// A Cloudflare Access service token, sent with every request when the worker sits
/// behind Access.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub client_id: String,
    pub client_secret: Secret,
}

/// Everything a request needs.
#[derive(Debug)]
pub struct Connection {
    pub base_url: String,
    /// The bearer token; none when Cloudflare Access signs the requests in.
    pub token: Option<Secret>,
    pub access: Option<AccessToken>,
}

/// An environment variable, empty counting as unset.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The profile `--env` names, if any.
pub fn profile(global: &Global) -> CommandResult<Option<Profile>> {
    // An empty KV_MIGRATE_ENV names no profile.
    let Some(name) = global.profile.as_ref().filter(|n| !n.trim().is_empty()) else {
        return Ok(None);
    };
    let path = config::config_path(env_var).ok_or_else(|| {
        Failure::Other(format!(
            "--env {name}: set KV_MIGRATE_CONFIG (or HOME) to find the config file"
        ))
    })?;
    config::load_profile(&path, name).map(Some)
}

/// The URL and credentials: `--url`, `--token-file` and the environment win over the
/// profile; a token is minted from `ADMIN_JWT_SECRET` or `JWT_SECRET` only when nothing else
/// names credentials.
pub fn connection(global: &Global, profile: Option<&Profile>) -> CommandResult<Connection> {
    let base_url = global
        .url
        .clone()
        .filter(|u| !u.trim().is_empty())
        .or_else(|| profile.and_then(|p| p.url.clone()))
        .unwrap_or_else(|| DEFAULT_URL.to_owned());
    let access =
        match profile {
            Some(Profile {
                access_client_id: Some(client_id),
                access_client_secret_file: Some(path),
                ..
            }) => Some(AccessToken {
                client_id: client_id.clone(),
                client_secret: read_secret_file(path, "the profile's access_client_secret_file")?,
            }),
            Some(Profile {
                access_client_id: None,
                access_client_secret_file: None,
                ..
            })
            | None => None,
            Some(_) => return Err(Failure::Other(
                "the profile needs both access_client_id and access_client_secret_file, or neither"
                    .into(),
            )),
        };
    let token = if let Some(path) = &global.token_file {
        Some(read_secret_file(path, "--token-file")?)
    } else if let Some(token) = env_var("KV_MIGRATE_TOKEN") {
        Some(Secret::new(token.trim()))
    } else if let Some(path) = profile.and_then(|p| p.token_file.as_ref()) {
        Some(read_secret_file(path, "the profile's token_file")?)
    } else if access.is_some() {
        // Cloudflare Access signs the requests in; no admin token is needed.
        None
    } else if let Ok(secret) = signing_secret("admin") {
        Some(Secret::new(mint_token(
            secret.expose(),
            "admin",
            &operator(),
            15,
        )?))
    } else {
        return Err(Failure::Unauthorized(
            "no credentials: pass --token-file PATH, set KV_MIGRATE_TOKEN, choose a profile \
             with --env (a token_file or an Access service token), or set ADMIN_JWT_SECRET \
             or JWT_SECRET to mint a token"
                .into(),
        ));
    };
    Ok(Connection {
        base_url: base_url.trim_end_matches('/').to_owned(),
        token,
        access,
    })
}

/// The secret to mint a token of `role` with: an admin's is signed with
/// `ADMIN_JWT_SECRET` when it is set, as the worker then requires; any other with
/// `JWT_SECRET`.
pub fn signing_secret(role: &str) -> CommandResult<Secret> {
    let admin_secret = (role == "admin")
        .then(|| env_var("ADMIN_JWT_SECRET"))
        .flatten();
    admin_secret
        .or_else(|| env_var("JWT_SECRET"))
        .map(Secret::new)
        .ok_or_else(|| {
            Failure::Other(
                "set JWT_SECRET (or ADMIN_JWT_SECRET for an admin) to mint a token".into(),
            )
        })
}

/// Who a locally minted token names, so the audit log says who acted.
fn operator() -> String {
    env_var("USER").map_or_else(|| "operator".to_owned(), |u| format!("{u} (kv-migrate)"))
}

/// A secret kept in a file, trimmed. Like ssh with a private key, it refuses a file that
/// group or others may read or write: the secret would already be exposed.
pub fn read_secret_file(path: &Path, what: &str) -> CommandResult<Secret> {
    let shown = path.display();
    let metadata = std::fs::metadata(path)
        .map_err(|e| Failure::Other(format!("{what}: cannot read {shown}: {e}")))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Failure::Other(format!(
                "{what}: {shown} is open to group or others (mode {mode:03o}); \
                 run `chmod 600 {shown}` (or 400)"
            )));
        }
    }
    #[cfg(not(unix))]
    let _ = metadata;
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Other(format!("{what}: cannot read {shown}: {e}")))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(Failure::Other(format!("{what}: {shown} is empty")));
    }
    Ok(Secret::new(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(name: &str, text: &str, mode: u32) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("kvm-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        path
    }

    #[test]
    fn a_secret_file_is_trimmed_and_never_shown() {
        let path = file_with("ok", "  header.payload.sig\n", 0o600);
        let secret = read_secret_file(&path, "--token-file").unwrap();
        assert_eq!(secret.expose(), "header.payload.sig");
        assert!(!format!("{secret:?}").contains("header"));
        std::fs::remove_file(path).ok();
    }

    #[test]
    fn an_empty_secret_file_is_refused() {
        let path = file_with("empty", " \n", 0o600);
        let error = read_secret_file(&path, "--token-file").unwrap_err();
        assert!(error.to_string().contains("is empty"), "{error}");
        std::fs::remove_file(path).ok();
    }

    #[cfg(unix)]
    #[test]
    fn a_secret_file_others_may_read_is_refused_without_showing_it() {
        let path = file_with("open", "the-token\n", 0o644);
        let error = read_secret_file(&path, "--token-file").unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("mode 644") && message.contains("chmod 600"),
            "{message}"
        );
        assert!(!message.contains("the-token"));
        std::fs::remove_file(path).ok();
    }
}
