//! Rewriting a file the agent keeps for a container (its hosts file, its `resolv.conf`) on
//! the file's own inode.
//!
//! Runtimes bind-mount these files into containers (runc, Docker and most runtimes do so with
//! the hosts file an engine keeps), and a bind mount keeps the inode it was given: a file
//! replaced by a rename would leave every later update unseen in the container. So a file is
//! written where it is, and the order of the writes protects a reader that races the writer:
//!
//! 1. the new text is written at its offset in one `pwrite`: only from the first byte that
//!    differs from what the file holds (a container joining adds lines near the end of every
//!    other container's file, so most updates write a line or two);
//! 2. when the new text is shorter than the old, the same `pwrite` pads it to the old length
//!    with a comment line (`#   …`), so that a reader never sees the old text's cut-off tail;
//! 3. then the file is truncated to the new text's length.
//!
//! A reader that opens the file after a write sees the whole new text; one that reads
//! meanwhile sees the old text, or the new one followed by the padding comment. The file is
//! never empty and never ends inside a line. What no in-place writer can prevent (Docker's,
//! which rewrites these files in place for the same reason, included) is a read that overlaps
//! the write's own copy into the page cache, a window of the order of a microsecond: it can
//! see the old bytes of one part and the new bytes of another.
//!
//! No fsync: a reader needs none, and after a crash the agent writes every file again from the
//! store when it starts.

use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// What a file's bytes are to become: the first `from` bytes kept (the caller knows they are
/// the same in the new text), `tail` after them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Change<'a> {
    /// Bytes kept at the start of the file.
    pub(crate) from: u64,
    /// The new text after them.
    pub(crate) tail: &'a [u8],
}

/// Makes the file at `path` hold the text `change` describes, on its inode (created, mode
/// 0644, when missing and the change keeps nothing). Returns `false`, having written nothing,
/// when the file is missing or shorter than the bytes it is to keep (it is not what the caller
/// thinks): give the whole text then.
pub(crate) fn rewrite(path: &Path, change: Change<'_>) -> std::io::Result<bool> {
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .create(change.from == 0)
        .mode(0o644)
        // The path is this host's own (never from the store); a link placed at it is refused
        // rather than followed.
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path);
    let f = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && change.from > 0 => return Ok(false),
        Err(e) => return Err(e),
    };
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    let old_len = meta.len();
    if old_len < change.from {
        return Ok(false);
    }
    if meta.permissions().mode() & 0o777 != 0o644 {
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    let new_len = change.from + change.tail.len() as u64;
    let mut buf;
    let bytes = match old_len.checked_sub(new_len) {
        Some(pad) if pad > 0 => {
            buf = Vec::with_capacity(change.tail.len() + pad as usize);
            buf.extend_from_slice(change.tail);
            push_padding(&mut buf, pad as usize);
            &buf[..]
        }
        _ => change.tail,
    };
    f.write_all_at(bytes, change.from)?;
    if old_len > new_len {
        f.set_len(new_len)?;
    }
    Ok(true)
}

/// Makes the file at `path` hold exactly `text`, on its inode; see the module docs.
pub(crate) fn rewrite_whole(path: &Path, text: &str) -> std::io::Result<()> {
    let change = Change {
        from: 0,
        tail: text.as_bytes(),
    };
    rewrite(path, change).map(|_| ())
}

/// Appends `n` bytes that a hosts file or `resolv.conf` reader skips: a comment line, or a
/// blank one when there is room for only its newline.
fn push_padding(buf: &mut Vec<u8>, n: usize) {
    if n >= 2 {
        buf.push(b'#');
        buf.resize(buf.len() + n - 2, b' ');
    }
    buf.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn the_inode_stays_and_the_text_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        rewrite_whole(&path, "a\nbb\nccc\n").unwrap();
        let ino = std::fs::metadata(&path).unwrap().ino();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o644);
        // Longer, from the third byte.
        let c = Change {
            from: 2,
            tail: b"bx\nccc\ndddd\n",
        };
        assert!(rewrite(&path, c).unwrap());
        assert_eq!(read(&path), "a\nbx\nccc\ndddd\n");
        // Shorter: padded, then cut.
        rewrite_whole(&path, "z\n").unwrap();
        assert_eq!(read(&path), "z\n");
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino);
        // Keeping more bytes than the file has: refused, nothing written.
        let c = Change {
            from: 10,
            tail: b"x\n",
        };
        assert!(!rewrite(&path, c).unwrap());
        assert_eq!(read(&path), "z\n");
    }

    #[test]
    fn padding_is_a_comment_or_a_blank_line_of_the_exact_length() {
        for n in 1..6 {
            let mut b = Vec::new();
            push_padding(&mut b, n);
            assert_eq!(b.len(), n);
            assert!(b.ends_with(b"\n"));
            assert!(n == 1 || b[0] == b'#');
        }
    }

    #[test]
    fn a_link_at_the_path_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "mine\n").unwrap();
        let path = dir.path().join("hosts");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(rewrite_whole(&path, "x\n").is_err());
        assert_eq!(read(&target), "mine\n");
    }
}
