//! Secret keys kept in files of their own, readable by this user only: made
//! (random) when missing, read otherwise. Two processes starting at once agree:
//! the file is created exclusively, and the loser reads the winner's.

use anyhow::Context as _;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

/// The key in `path`, as the bytes of its (trimmed) text; made first by `fresh`
/// if the file does not exist. Shorter than `min_len` bytes is refused.
pub fn load_or_create(
    path: &str,
    what: &str,
    min_len: usize,
    fresh: impl FnOnce() -> String,
) -> anyhow::Result<Vec<u8>> {
    if let Some(dir) = std::path::Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            let key = fresh();
            f.write_all(key.as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("writing the {what} {path}"))?;
            tracing::info!(path, "made a new {what}");
            Ok(key.into_bytes())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(path, what, min_len),
        Err(e) => Err(e).with_context(|| format!("creating the {what} {path}")),
    }
}

/// A key file's key (surrounding whitespace aside); warns when others may read it.
pub fn read(path: &str, what: &str, min_len: usize) -> anyhow::Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("reading the {what} {path}"))?;
    let key = raw.trim_ascii().to_vec();
    if key.len() < min_len {
        anyhow::bail!("the {what} in {path} is shorter than {min_len} bytes");
    }
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path,
            "the {what} file may be read by other users; make it 0600"
        );
    }
    Ok(key)
}

/// `n` random bytes from the operating system, as lowercase hex.
pub fn random_hex(n: usize) -> String {
    use argon2::password_hash::rand_core::{OsRng, RngCore};
    let mut b = vec![0u8; n];
    OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_private_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = format!("{}/k/new.key", dir.path().display());
        let made = load_or_create(&path, "test key", 32, || random_hex(32)).unwrap();
        assert_eq!(made.len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = load_or_create(&path, "test key", 32, || unreachable!()).unwrap();
        assert_eq!(made, again);
        std::fs::write(&path, "short\n").unwrap();
        assert!(read(&path, "test key", 32).is_err());
    }
}
