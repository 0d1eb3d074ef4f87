//! Profiles: one section per deployment in a TOML file, chosen with `--env NAME`, so an
//! operator names where to act instead of pasting URLs and tokens.
//!
//! ```toml
//! [env.production]
//! url = "https://customers.example.com"
//! token_file = "~/.config/kv-migrate/production.token"
//! access_client_id = "….access"                          # a Cloudflare Access service token
//! access_client_secret_file = "~/.config/kv-migrate/production.access-secret"
//! ```
//!
//! The file names only paths to secrets, never secrets themselves, so it may be shared.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::outcome::{CommandResult, Failure};

/// One deployment's settings; paths may start with `~/` or be relative to the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub url: Option<String>,
    pub token_file: Option<PathBuf>,
    pub access_client_id: Option<String>,
    pub access_client_secret_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    env: BTreeMap<String, Profile>,
}

/// Where the config file is: `$KV_MIGRATE_CONFIG`, else the XDG config directory.
pub fn config_path(var: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    if let Some(explicit) = set("KV_MIGRATE_CONFIG") {
        return Some(PathBuf::from(explicit));
    }
    let base = match set("XDG_CONFIG_HOME") {
        Some(xdg) => PathBuf::from(xdg),
        None => PathBuf::from(set("HOME")?).join(".config"),
    };
    Some(base.join("kv-migrate").join("config.toml"))
}

/// The profile `name` of the file at `path`, its paths made absolute.
pub fn load_profile(path: &Path, name: &str) -> CommandResult<Profile> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::Other(format!(
            "--env {name}: cannot read the config file {} ({e}); set KV_MIGRATE_CONFIG to its path",
            path.display()
        ))
    })?;
    let mut file: ConfigFile = toml::from_str(&text).map_err(|e| {
        Failure::Other(format!(
            "the config file {} is not valid: {e}",
            path.display()
        ))
    })?;
    let Some(mut profile) = file.env.remove(name) else {
        let known: Vec<&str> = file.env.keys().map(String::as_str).collect();
        return Err(Failure::Other(format!(
            "--env {name}: no [env.{name}] in {} (it has: {})",
            path.display(),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    profile.token_file = profile.token_file.map(|p| resolve(dir, &p));
    profile.access_client_secret_file = profile.access_client_secret_file.map(|p| resolve(dir, &p));
    Ok(profile)
}

/// `~/x` under the home directory, a relative path under the config file's directory.
fn resolve(dir: &Path, path: &Path) -> PathBuf {
    if let Ok(rest) = path.strip_prefix("~") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    if path.is_relative() {
        dir.join(path)
    } else {
        path.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn the_config_file_is_found_where_the_environment_says() {
        let explicit = [("KV_MIGRATE_CONFIG", "/etc/kvm.toml"), ("HOME", "/h")];
        assert_eq!(config_path(vars(&explicit)), Some("/etc/kvm.toml".into()));
        let xdg = [("XDG_CONFIG_HOME", "/x"), ("HOME", "/h")];
        assert_eq!(
            config_path(vars(&xdg)),
            Some("/x/kv-migrate/config.toml".into())
        );
        let home = [("HOME", "/h"), ("XDG_CONFIG_HOME", "")];
        assert_eq!(
            config_path(vars(&home)),
            Some("/h/.config/kv-migrate/config.toml".into())
        );
        assert_eq!(config_path(vars(&[])), None);
    }

    #[test]
    fn a_profile_is_read_with_its_paths_resolved() {
        let dir = std::env::temp_dir().join(format!("kvm-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.toml");
        std::fs::write(
            &path,
            "[env.staging]\nurl = \"https://staging.example.com\"\ntoken_file = \"staging.token\"\n\
             access_client_id = \"id.access\"\naccess_client_secret_file = \"/run/secret\"\n\
             [env.production]\nurl = \"https://customers.example.com\"\n",
        )
        .unwrap();
        let staging = load_profile(&path, "staging").unwrap();
        assert_eq!(staging.url.as_deref(), Some("https://staging.example.com"));
        assert_eq!(staging.token_file, Some(dir.join("staging.token")));
        assert_eq!(staging.access_client_id.as_deref(), Some("id.access"));
        assert_eq!(
            staging.access_client_secret_file,
            Some("/run/secret".into())
        );
        let missing = load_profile(&path, "prod").unwrap_err().to_string();
        assert!(missing.contains("it has: production, staging"), "{missing}");
        std::fs::write(&path, "[env.staging]\nurl = 1\n").unwrap();
        assert!(load_profile(&path, "staging").is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
