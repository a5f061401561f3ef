//! The benchmark's and the chaos run's settings, read from the environment:
//! an unset or blank variable takes its default.

use anyhow::Context as _;

pub fn var(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.into())
}

/// A whole number, or a clear error naming the variable.
pub fn whole(key: &str, default: u64) -> anyhow::Result<u64> {
    let v = var(key, &default.to_string());
    v.trim()
        .parse()
        .with_context(|| format!("{key}={v:?} is not a whole number"))
}
