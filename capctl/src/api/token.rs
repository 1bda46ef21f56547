//! API tokens: where the client's comes from (`--token-file`, env
//! `CAPVISOR_TOKEN`, env `CAPVISOR_TOKEN_FILE`), making a new one (32
//! random bytes from the OS as 64 lowercase hex characters), its SHA-256
//! as the node stores it, and writing it to a file only its owner reads.
//!
//! Invariant: a token's text goes only into an `Authorization` header or
//! a mode-0600 file (or standard output when no file was given for it).

use super::Global;
use anyhow::{Context, Result, bail};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Environment variable holding the token itself.
pub const ENV_TOKEN: &str = "CAPVISOR_TOKEN";
/// Environment variable naming a file that holds the token.
pub const ENV_TOKEN_FILE: &str = "CAPVISOR_TOKEN_FILE";
/// The file on the data volume where the node keeps the token's hash.
pub const HASH_PATH: &str = root_partition::services::mgmt::api::auth::TOKEN_FILE;

/// The client's token and a description of where it came from (for
/// error messages: never the token).
pub struct Token {
    /// The token's text.
    pub value: String,
    /// E.g. "the token file /root/.capvisor-token (--token-file)".
    pub source: String,
}

/// The file the token is kept in: `--token-file`, else `CAPVISOR_TOKEN_FILE`.
pub fn file_of(global: &Global) -> Option<(PathBuf, &'static str)> {
    if let Some(path) = &global.token_file {
        return Some((path.clone(), "--token-file"));
    }
    std::env::var_os(ENV_TOKEN_FILE)
        .filter(|v| !v.is_empty())
        .map(|v| (PathBuf::from(v), ENV_TOKEN_FILE))
}

/// The client's token: `--token-file`, else env `CAPVISOR_TOKEN`, else the
/// file env `CAPVISOR_TOKEN_FILE` names.
pub fn load(global: &Global) -> Result<Token> {
    if let Some(path) = &global.token_file {
        return read_file(path, "--token-file");
    }
    if let Ok(value) = std::env::var(ENV_TOKEN)
        && !value.is_empty()
    {
        let source = format!("the environment variable {ENV_TOKEN}");
        return Ok(Token {
            value: check(value.trim(), &source)?,
            source,
        });
    }
    if let Some((path, how)) = file_of(global) {
        return read_file(&path, how);
    }
    bail!(
        "no API token: give --token-file PATH, or set {ENV_TOKEN} or {ENV_TOKEN_FILE} \
         (`capctl node token --volume IMG --out PATH` makes one)"
    )
}

fn read_file(path: &Path, how: &str) -> Result<Token> {
    let source = format!("the token file {} ({how})", path.display());
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {source}"))?;
    Ok(Token {
        value: check(text.trim(), &source)?,
        source,
    })
}

/// A token must fit in a header: visible ASCII, no spaces.
fn check(value: &str, source: &str) -> Result<String> {
    if value.is_empty() {
        bail!("{source} is empty");
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("{source} does not hold a token (visible ASCII characters, no spaces)");
    }
    Ok(value.to_owned())
}

/// A new token: 32 random bytes from the OS as 64 lowercase hex characters.
pub fn generate() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot get random bytes from the OS: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// SHA-256 of the token's text as 64 lowercase hex characters: what the
/// node stores and compares.
pub fn digest(token: &str) -> String {
    use root_partition::services::mgmt::api::auth::{digest_file, token_digest};
    let file = digest_file(&token_digest(token.as_bytes()));
    String::from_utf8_lossy(&file).trim_end().to_owned()
}

/// A token file being written: the token lands in `PATH.new` (mode 0600)
/// first and takes `PATH`'s place only on [`Pending::commit`], so a
/// failure between the two leaves the old file as it was.
pub struct Pending {
    temp: PathBuf,
    path: PathBuf,
}

impl Pending {
    /// Writes `token` (and a newline) to `PATH.new`, readable only by its owner.
    pub fn write(path: &Path, token: &str) -> Result<Pending> {
        let mut name = path.as_os_str().to_owned();
        name.push(".new");
        let temp = PathBuf::from(name);
        let _ = std::fs::remove_file(&temp);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .with_context(|| format!("cannot create {}", temp.display()))?;
        // The mode is set even if a umask took bits away.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .and_then(|()| file.write_all(format!("{token}\n").as_bytes()))
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", temp.display()))?;
        Ok(Pending {
            temp,
            path: path.to_owned(),
        })
    }

    /// Puts the new file in place of `PATH`.
    pub fn commit(self) -> Result<PathBuf> {
        std::fs::rename(&self.temp, &self.path).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.temp.display(),
                self.path.display()
            )
        })?;
        Ok(self.path)
    }

    /// Removes the new file (the operation failed).
    pub fn abandon(self) {
        let _ = std::fs::remove_file(&self.temp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_64_hex_and_differ() {
        let a = generate().expect("token");
        let b = generate().expect("token");
        assert_eq!(a.len(), 64);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }

    #[test]
    fn digest_is_sha256_hex() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn bad_tokens_are_refused() {
        assert!(check("", "x").is_err());
        assert!(check("a b", "x").is_err());
        assert!(check("abc\u{e9}", "x").is_err());
        assert_eq!(check("abc", "x").expect("ok"), "abc");
    }
}
