//! Secrets from files, as Docker and Kubernetes mount them: every secret
//! setting `K` can instead be given as `K_file`, a path whose contents (less
//! trailing newlines) are the value. The environment form falls out of the
//! usual naming: `SCRIPT_MANAGER_HTTP__ADMIN_TOKEN_FILE=/run/secrets/admin`.
//!
//! Files are read before validation, so a store URL from a file is checked
//! like one from the TOML file. A file that cannot be read, an empty one, or
//! a setting given both ways is a problem naming the key; the contents never
//! appear in a message.

use std::path::Path;

use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::load::Problem;

/// The secret settings outside the accounts table.
const SECRET_KEYS: [&str; 6] = [
    "http.admin_token",
    "http.read_token",
    "store.url",
    "store.encryption_key",
    "notifications.webhook_url",
    "notifications.signing_secret",
];
/// Each account's secret settings.
const ACCOUNT_KEYS: [&str; 2] = ["api_key", "api_secret"];

/// The value read from one `K_file`, set at `K`.
struct FromFile {
    key: String,
    path: String,
    value: String,
}

/// Values read from the files that `overrides` names, as a layer to merge
/// on top, and the problems found.
pub fn layer(overrides: &Figment, source_of: impl Fn(&str) -> String) -> (SecretFiles, Vec<Problem>) {
    let mut read = Vec::new();
    let mut problems = Vec::new();
    // Merged once: `Figment::find_value` merges every layer on each call,
    // which made one lookup per account key quadratic (minutes at 10 000 accounts).
    let root = overrides
        .extract::<Value>()
        .unwrap_or_else(|_| Value::from(Dict::new()));
    let find = |key: &str| root.find_ref(key);
    for key in secret_keys(&root) {
        let file_key = format!("{key}_file");
        let Some(value) = find(&file_key) else {
            continue;
        };
        let mut problem = |message: String| {
            problems.push(Problem {
                key: file_key.clone(),
                message,
                source: source_of(&file_key),
            })
        };
        let Some(path) = value.as_str().map(str::to_string) else {
            problem("must be a file path".into());
            continue;
        };
        if find(&key).is_some() {
            problem(format!("`{key}` is set too: give the value or a file, not both"));
            continue;
        }
        match read_secret(Path::new(&path)) {
            Ok(value) => read.push(FromFile { key, path, value }),
            Err(message) => problem(message),
        }
    }
    (SecretFiles(read), problems)
}

/// `K` for every secret setting, accounts included (those `overrides` names).
fn secret_keys(root: &Value) -> Vec<String> {
    let mut keys: Vec<String> = SECRET_KEYS.iter().map(|k| k.to_string()).collect();
    if let Some(Value::Dict(_, accounts)) = root.find_ref("exchange.accounts") {
        for name in accounts.keys() {
            keys.extend(ACCOUNT_KEYS.iter().map(|k| format!("exchange.accounts.{name}.{k}")));
        }
    }
    keys
}

/// The file's contents without trailing newlines; an error that tells what to do.
fn read_secret(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(value.to_string())
}

/// Reads each named token's `token_file` (`[[http.tokens]]` is a list, so
/// its files are read after extraction, not layered by key).
pub fn token_files(tokens: &mut [super::TokenConfig], problems: &mut Vec<Problem>) {
    for t in tokens {
        let Some(path) = t.token_file.clone() else { continue };
        let key = format!("http.tokens.{}.token_file", t.name);
        let mut problem = |message: String| {
            problems.push(Problem {
                key: key.clone(),
                message,
                source: format!("file {path}"),
            })
        };
        if t.token.is_some() {
            problem("`token` is set too: give the value or a file, not both".into());
            continue;
        }
        match read_secret(Path::new(&path)) {
            Ok(value) => t.token = Some(super::Secret::new(value)),
            Err(message) => problem(message),
        }
    }
}

/// The values read from files, each under its setting, reported as coming from its file.
pub struct SecretFiles(Vec<FromFile>);

impl SecretFiles {
    /// `figment` with every value read from a file merged on top.
    pub fn merge_into(self, mut figment: Figment) -> Figment {
        for one in self.0 {
            figment = figment.merge(one);
        }
        figment
    }
}

impl Provider for FromFile {
    fn metadata(&self) -> Metadata {
        Metadata::from(
            "secret file",
            figment::Source::File(std::path::PathBuf::from(&self.path)),
        )
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut root = Dict::new();
        super::env::insert_path(&mut root, &self.key, Value::from(self.value.clone()));
        Ok(Profile::Default.collect(root))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_newlines_go_and_an_empty_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cr3t\r\n\n").unwrap();
        assert_eq!(read_secret(&path).unwrap(), "s3cr3t");
        std::fs::write(&path, "\n").unwrap();
        assert!(read_secret(&path).unwrap_err().ends_with("is empty"));
        let missing = read_secret(&dir.path().join("nope")).unwrap_err();
        assert!(missing.starts_with("cannot read"), "{missing}");
    }
}
