//! Rewriting a file the agent keeps for a container (a `resolv.conf`, a hosts file written
//! whole) on the file's own inode.
//!
//! Runtimes bind-mount these files into containers (runc, Docker and most runtimes do so with
//! the files an engine keeps), and a bind mount keeps the inode it was given: a file replaced
//! by a rename would leave every later update unseen in the container. So a file is written
//! where it is, and the shape of the file and the order of the writes protect a reader that
//! races the writer. (Hosts files are mostly updated in smaller steps still: see `hosts`.)
//!
//! The file is longer than its text: the text is followed by comment lines of spaces
//! (`#   …`) up to the file's length, its capacity, which grows ahead of the text (when the
//! text passes nine tenths of it, to a quarter more than the text) and shrinks behind it (when
//! the text falls under half of it). An update makes, in this order:
//!
//! 1. when the capacity grows, a comment line appended at the old end, before any text
//!    changes: the file is still the old text, followed by padding;
//! 2. one `pwrite` of the bytes that differ, from the first changed byte to the last one,
//!    within the file's length;
//! 3. when the capacity shrinks, a truncation at the end of a padding line.
//!
//! So between those calls the file is a whole text followed by whole comment lines, never
//! empty and never ending inside a line, and a reader that read it to its end and reads on
//! later finds only padding after. A new file is made whole before it has a name (an unnamed
//! file of its directory, then linked), and nothing else ever appears beside it. What no
//! in-place writer can prevent (Docker's, which rewrites these files in place for the same
//! reason, included): a read that overlaps the `pwrite`'s own copy into the page cache (a
//! window of the order of a microsecond) can see old bytes of one part and new of another,
//! and an update whose text outgrows the whole capacity at once writes past the old end.
//!
//! No fsync: a reader needs none, and after a crash the agent writes every file again from the
//! store when it starts.

use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// One system call of an update.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// `pwrite` of `bytes` at `at`.
    Write { at: u64, bytes: Vec<u8> },
    /// `ftruncate` to the length.
    Truncate(u64),
}

/// Granularity of a file's capacity.
const CAPACITY_STEP: u64 = 256;

/// The capacity for a text of `len` bytes in a file of `current` bytes: kept while the text
/// fills between half and nine tenths of it, else a quarter more than the text (rounded up).
fn capacity(len: u64, current: u64) -> u64 {
    if len * 10 <= current * 9 && len * 2 >= current {
        return current;
    }
    (len + len / 4 + 2).div_ceil(CAPACITY_STEP) * CAPACITY_STEP
}

/// The calls that turn the file `old` into `text` padded to `cap` bytes (at least the
/// text's): padding appended first when it grows, then one write of the bytes that differ,
/// then the truncation when it shrinks (see the module docs).
fn plan(old: &[u8], text: &[u8], cap: u64) -> Vec<Op> {
    let current = old.len() as u64;
    let len = text.len() as u64;
    let mut ops = Vec::new();
    let mut now = old.to_vec();
    if cap > current {
        let grow = padding((cap - current) as usize);
        ops.push(Op::Write {
            at: current,
            bytes: grow.clone(),
        });
        now.extend_from_slice(&grow);
    }
    // What the file must hold before the truncation: the text, its padding, and (shrinking)
    // a second padding line up to the old end, so the cut falls at the end of a line.
    let mut want = text.to_vec();
    want.extend_from_slice(&padding((cap - len) as usize));
    if cap < current {
        want.extend_from_slice(&padding((current - cap) as usize));
    }
    if let Some(first) = now.iter().zip(&want).position(|(a, b)| a != b) {
        let last = now
            .iter()
            .zip(&want)
            .rposition(|(a, b)| a != b)
            .unwrap_or(first);
        ops.push(Op::Write {
            at: first as u64,
            bytes: want[first..=last].to_vec(),
        });
    }
    if cap < current {
        ops.push(Op::Truncate(cap));
    }
    ops
}

/// Makes the file at `path` hold `text` padded to its capacity, on its inode (created, mode
/// 0644, whole, when missing); see the module docs.
pub(crate) fn rewrite_whole(path: &Path, text: &str) -> std::io::Result<()> {
    rewrite(path, text.as_bytes(), None)
}

/// Makes the file at `path` hold exactly `bytes` (a text that carries its own padding), on its
/// inode, with the same order of writes.
pub(crate) fn rewrite_exact(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    rewrite(path, bytes, Some(bytes.len() as u64))
}

/// Makes the file at `path` hold `text` padded to `exact` bytes, or to its capacity.
fn rewrite(path: &Path, text: &[u8], exact: Option<u64>) -> std::io::Result<()> {
    let len = text.len() as u64;
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        // The path is this host's own (never from the store); a link placed at it is refused
        // rather than followed.
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path);
    let f = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return create(path, text, exact.unwrap_or_else(|| capacity(len, 0)));
        }
        Err(e) => return Err(e),
    };
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    if meta.permissions().mode() & 0o777 != 0o644 {
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    let mut old = vec![0; meta.len() as usize];
    f.read_exact_at(&mut old, 0)?;
    let cap = exact.unwrap_or_else(|| capacity(len, meta.len()));
    for op in plan(&old, text, cap) {
        match op {
            Op::Write { at, bytes } => f.write_all_at(&bytes, at)?,
            Op::Truncate(len) => f.set_len(len)?,
        }
    }
    Ok(())
}

/// Makes a new file at `path` holding `text` padded to `cap` bytes, whole from the start:
/// written as an unnamed file of the directory (`O_TMPFILE`) and then linked at `path`, so no
/// reader sees it empty and no second name appears beside it (iproute2 would bind-mount any
/// file of `/etc/netns/NAME/`). Where the file system has no unnamed files, written beside it
/// and renamed into place.
fn create(path: &Path, text: &[u8], cap: u64) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let mut bytes = text.to_vec();
    bytes.extend_from_slice(&padding((cap - text.len() as u64) as usize));
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let cdir = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: `cdir` is a valid NUL-terminated path for the duration of the call.
    let fd = unsafe {
        libc::open(
            cdir.as_ptr(),
            libc::O_TMPFILE | libc::O_WRONLY | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL) => create_by_rename(path, &bytes),
            _ => Err(e),
        };
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    f.write_all_at(&bytes, 0)?;
    let proc_path = std::ffi::CString::new(format!("/proc/self/fd/{fd}"))
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let target = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: both paths are valid NUL-terminated strings; `fd` stays open until after.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// [`create`] on a file system without unnamed files.
fn create_by_rename(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(
        ".{name}.new-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let made = (|| {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        f.write_all_at(bytes, 0)?;
        std::fs::rename(&tmp, path)
    })();
    if made.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    made
}

/// `n` bytes that a hosts file or `resolv.conf` reader skips: a comment line, or a blank one
/// when there is room for only its newline.
pub(crate) fn padding(n: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(n);
    if n >= 2 {
        buf.push(b'#');
        buf.resize(n - 1, b' ');
    }
    if n >= 1 {
        buf.push(b'\n');
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    /// The text of a file this writer made: what is before its padding.
    fn text_of(file: &str) -> &str {
        match file.rfind("\n#") {
            Some(i) if file[i + 2..].bytes().all(|b| b == b' ' || b == b'\n') => &file[..=i],
            _ => file,
        }
    }

    /// Whether every line of `file` is a text line, padding or blank, and it ends a line.
    fn whole(file: &[u8]) -> bool {
        let Ok(text) = std::str::from_utf8(file) else {
            return false;
        };
        !text.is_empty()
            && text.ends_with('\n')
            && text
                .lines()
                .all(|l| l.trim().is_empty() || l.starts_with('#') || l.starts_with("line "))
    }

    /// Applies `ops` to `file` one by one, checking the file between them, and what a reader
    /// that read it whole at one step and looked for more at a later one would have seen.
    fn apply_checked(file: &mut Vec<u8>, ops: &[Op], straddles: bool) {
        let mut states = vec![file.clone()];
        for op in ops {
            match op {
                Op::Write { at, bytes } => {
                    let (at, end) = (*at as usize, *at as usize + bytes.len());
                    if file.len() < end {
                        file.resize(end, 0);
                    }
                    file[at..end].copy_from_slice(bytes);
                }
                Op::Truncate(len) => file.truncate(*len as usize),
            }
            states.push(file.clone());
        }
        for (i, a) in states.iter().enumerate() {
            assert!(whole(a), "state {i}: {:?}", String::from_utf8_lossy(a));
            for b in states[i..].iter().filter(|_| straddles) {
                let mut seen = a.clone();
                seen.extend_from_slice(b.get(a.len()..).unwrap_or_default());
                assert!(
                    whole(&seen),
                    "read at {i}, then on: {:?}",
                    String::from_utf8_lossy(&seen)
                );
            }
        }
    }

    fn text(lines: std::ops::Range<u32>) -> String {
        lines.map(|i| format!("line {i}\n")).collect()
    }

    #[test]
    fn every_step_of_every_update_leaves_whole_lines() {
        let first = text(0..1);
        let mut file = first.into_bytes();
        file.extend_from_slice(&padding(
            (capacity(file.len() as u64, 0)) as usize - file.len(),
        ));
        // Growing by a line at a time and by several, shrinking a little and a lot.
        for n in (2..60).chain([61, 64, 70, 40, 39, 12, 11, 5, 80, 1]) {
            let new = text(0..n);
            let current = file.len() as u64;
            let ops = plan(&file, new.as_bytes(), capacity(new.len() as u64, current));
            // Only a text that outgrew the whole file at once may start where it ended.
            apply_checked(&mut file, &ops, new.len() as u64 <= current);
            assert_eq!(
                text_of(std::str::from_utf8(&file).unwrap()),
                new,
                "{n} lines"
            );
        }
    }

    #[test]
    fn the_inode_stays_and_the_text_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        rewrite_whole(&path, "a\nbb\nccc\n").unwrap();
        let ino = std::fs::metadata(&path).unwrap().ino();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o644);
        assert_eq!(text_of(&read(&path)), "a\nbb\nccc\n");
        rewrite_whole(&path, "a\nbx\nccc\ndddd\n").unwrap();
        assert_eq!(text_of(&read(&path)), "a\nbx\nccc\ndddd\n");
        rewrite_whole(&path, "z\n").unwrap();
        assert_eq!(text_of(&read(&path)), "z\n");
        rewrite_exact(&path, b"exact\n").unwrap();
        assert_eq!(read(&path), "exact\n");
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino);
        // Nothing else was ever in the directory.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn padding_is_a_comment_or_a_blank_line_of_the_exact_length() {
        for n in 0..6 {
            let b = padding(n);
            assert_eq!(b.len(), n);
            assert!(n == 0 || b.ends_with(b"\n"));
            assert!(n < 2 || b[0] == b'#');
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
