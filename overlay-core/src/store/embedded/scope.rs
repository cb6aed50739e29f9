//! Mapping between the API's keys (relative to the store prefix) and the file's keys
//! (`<prefix>/<key>`), so stores with different prefixes can share one file.

/// The store prefix of one client, as stored in the file.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    /// `<prefix>/`.
    base: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Keys {
            base: format!("{}/", prefix.trim_matches('/')),
        }
    }

    /// The file's key for API key `key`.
    pub(super) fn full(&self, key: &str) -> String {
        let mut s = String::with_capacity(self.base.len() + key.len());
        s.push_str(&self.base);
        s.push_str(key);
        s
    }

    /// The API key for file key `full`, if it is below this prefix.
    pub(super) fn relative<'a>(&self, full: &'a str) -> Option<&'a str> {
        full.strip_prefix(self.base.as_str())
    }

    /// What a list or watch of API prefix `prefix` (already validated) covers: the key
    /// `prefix` itself and every key below it, with or without a trailing `/` (the one list
    /// semantics of every backend, [`KvStore::list`](crate::store::KvStore::list)).
    pub(super) fn scope(&self, prefix: &str) -> Scope {
        let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
        if prefix.is_empty() {
            Scope {
                exact: None,
                dir: self.full(prefix),
            }
        } else {
            Scope {
                exact: Some(self.full(prefix)),
                dir: self.full(&format!("{prefix}/")),
            }
        }
    }
}

/// A set of file keys: the key `exact` itself (for a prefix without trailing `/`) and every key
/// starting with `dir` (which ends with `/`). `a/b` covers `a/b` and `a/b/c`, not `a/bc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Scope {
    pub(super) exact: Option<String>,
    pub(super) dir: String,
}

impl Scope {
    /// Whether file key `full` is in the scope.
    pub(super) fn contains(&self, full: &str) -> bool {
        full.starts_with(self.dir.as_str()) || self.exact.as_deref() == Some(full)
    }

    /// The half-open key range `[dir, end)` of the keys below `dir`: keys are printable ASCII and
    /// `dir` ends with `/`, so replacing that `/` by the next character `0` bounds them.
    pub(super) fn range_end(&self) -> String {
        let mut end = self.dir.clone();
        end.pop();
        end.push('0');
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_path_prefixes() {
        let keys = Keys::new("overlay/v1");
        assert_eq!(keys.full("a/b"), "overlay/v1/a/b");
        assert_eq!(keys.relative("overlay/v1/a/b"), Some("a/b"));
        assert_eq!(keys.relative("overlay/v10/a"), None);
        let s = keys.scope("a/b");
        assert!(s.contains("overlay/v1/a/b") && s.contains("overlay/v1/a/b/c"));
        assert!(!s.contains("overlay/v1/a/bc") && !s.contains("overlay/v1/a"));
        assert_eq!(s.range_end(), "overlay/v1/a/b0");
        assert_eq!(keys.scope("a/b/"), s, "a trailing '/' changes nothing");
        let all = keys.scope("");
        assert!(all.contains("overlay/v1/x") && !all.contains("overlay/v2/x"));
        assert_eq!(all.range_end(), "overlay/v10");
        // Every printable key character sorts between the bounds.
        for c in '!'..='~' {
            let k = format!("overlay/v1/a/b/{c}");
            assert!(k.as_str() >= s.dir.as_str() && k < s.range_end(), "{k}");
        }
    }
}
