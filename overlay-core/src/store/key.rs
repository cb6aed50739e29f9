//! Key validation, done before any I/O so a bad key never reaches a server.

use crate::error::{Error, Result};

/// Longest key accepted, in bytes (below the store prefix).
pub const MAX_KEY_LEN: usize = 512;

/// Checks a key: 1..=[`MAX_KEY_LEN`] bytes of printable ASCII (no space, no control
/// characters), `/`-separated segments none of which is empty, `.` or `..`.
pub fn validate_key(key: &str) -> Result<()> {
    check(key, false)
}

/// Checks a prefix for `list` and `watch`: like [`validate_key`], but `""` (everything) is
/// allowed and one trailing `/` is tolerated.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    check(prefix.strip_suffix('/').unwrap_or(prefix), true)
}

fn check(key: &str, empty_ok: bool) -> Result<()> {
    let bad = |why: String| {
        Error::invalid("validate key", format!("key {key:?} {why}")).with_hint(
            "keys are '/'-separated segments of printable ASCII, without empty, '.' or '..' \
             segments, at most 512 bytes",
        )
    };
    if key.is_empty() {
        return if empty_ok {
            Ok(())
        } else {
            Err(bad("is empty".into()))
        };
    }
    if key.len() > MAX_KEY_LEN {
        return Err(bad(format!(
            "is {} bytes long, over the limit of {MAX_KEY_LEN}",
            key.len()
        )));
    }
    if let Some(c) = key.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(bad(format!("contains the character {c:?}")));
    }
    for (i, seg) in key.split('/').enumerate() {
        match seg {
            "" => return Err(bad(format!("has an empty segment at position {}", i + 1))),
            "." | ".." => return Err(bad(format!("has a {seg:?} segment"))),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn good_keys() {
        for k in [
            "a",
            "networks/abc",
            "endpoints/n/e",
            "ipam/10.0.0.0-24/blocks/0",
        ] {
            validate_key(k).unwrap();
        }
        validate_prefix("").unwrap();
        validate_prefix("networks/").unwrap();
    }

    #[test]
    fn bad_keys_name_the_bad_part() {
        let long = "x".repeat(513);
        let cases = [
            ("", "empty"),
            ("/a", "empty segment at position 1"),
            ("a//b", "empty segment at position 2"),
            ("a/", "empty segment"),
            ("a/../b", "\"..\" segment"),
            ("./a", "\".\" segment"),
            ("a\nb", "'\\n'"),
            ("a b", "' '"),
            ("caf\u{e9}", "'é'"),
            (long.as_str(), "513 bytes"),
        ];
        for (k, want) in cases {
            let e = validate_key(k).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            assert!(e.to_string().contains(want), "{k:?}: {e}");
        }
        assert!(validate_prefix("a//").is_err());
    }
}
