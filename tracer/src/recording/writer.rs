//! Writing a recording: chunks framed with a CRC as events arrive, an end marker when the
//! writer finishes, files created private (0600, never through a symbolic link).

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};

use super::codec::ChunkEncoder;
use super::*;

/// Writes a recording as events arrive.
pub struct Writer<W: Write> {
    out: W,
    buf: BytesMut,
    enc: ChunkEncoder,
    last_flush: Instant,
    /// Called after each chunk is written (fdatasync for files).
    sync: Option<fn(&mut W) -> io::Result<()>>,
    pub bytes_written: u64,
    pub events_written: u64,
    /// Event chunks written (the end marker is not one).
    pub chunks_written: u64,
}

/// Opens a log file for appending: created 0600, never through a symbolic link.
pub fn open_private_append(path: &Path) -> io::Result<File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600).custom_flags(libc_nofollow());
    }
    opts.open(path)
}

/// Creates the output file: mode 0600, never through a symlink, and not over an existing
/// file unless `force`. With `force`, an existing file is reused only if it is a regular
/// file with no other hard link; it is made 0600 before it is emptied (so a report never
/// lands in a file others can read), and a FIFO or device is refused instead of blocking.
pub fn create_private(path: &Path, force: bool) -> io::Result<File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if force {
        // Not truncated yet: first check what it is.
        opts.create(true);
        #[cfg(not(unix))]
        opts.truncate(true);
    } else {
        opts.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600)
            .custom_flags(libc_nofollow() | libc_nonblock());
    }
    let named = |e: io::Error, hint: &str| {
        io::Error::new(
            e.kind(),
            format!("cannot create {}: {e}{hint}", path.display()),
        )
    };
    let f = opts.open(path).map_err(|e| {
        let hint = match e.kind() {
            io::ErrorKind::AlreadyExists => " (it exists: pass --force to overwrite it)",
            _ if e.raw_os_error() == Some(40) || e.raw_os_error() == Some(62) => {
                " (it is a symbolic link: refusing to follow it)"
            }
            _ if e.raw_os_error() == Some(6) => " (it is a FIFO with no reader)",
            _ => "",
        };
        named(e, hint)
    })?;
    #[cfg(unix)]
    if force {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let m = f.metadata().map_err(|e| named(e, ""))?;
        let refuse = |why: &str| {
            Err(io::Error::other(format!(
                "cannot create {}: {why}",
                path.display()
            )))
        };
        if !m.file_type().is_file() {
            return refuse("it exists and is not a regular file; refusing to write to it");
        }
        if m.nlink() > 1 {
            return refuse(
                "it has other hard links; refusing to overwrite a file shared with other names",
            );
        }
        if m.mode() & 0o7777 != 0o600 {
            f.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| named(e, ""))?;
        }
        f.set_len(0).map_err(|e| named(e, ""))?;
    }
    Ok(f)
}

#[cfg(unix)]
fn libc_nofollow() -> i32 {
    // O_NOFOLLOW: 0o400000 on Linux x86/s390x/arm, 0x100 on macOS and the BSDs.
    if cfg!(target_os = "linux") {
        0o400000
    } else {
        0x100
    }
}

#[cfg(unix)]
fn libc_nonblock() -> i32 {
    // O_NONBLOCK (04000 on Linux, 4 on macOS and the BSDs): opening a FIFO fails instead of
    // waiting for a reader; no effect on regular files.
    if cfg!(target_os = "linux") {
        0o4000
    } else {
        0x4
    }
}

impl Writer<File> {
    /// A recording file, synced to disk at every chunk.
    pub fn create(path: &Path, header: &Header, force: bool) -> io::Result<Writer<File>> {
        let f = create_private(path, force)?;
        let mut w = Writer::new(f, header)?;
        w.sync = Some(|f: &mut File| f.sync_data());
        Ok(w)
    }
}

impl<W: Write> Writer<W> {
    /// Writes the header to `out`.
    pub fn new(mut out: W, header: &Header) -> io::Result<Writer<W>> {
        Self::new_with_version(&mut out, header, VERSION_MAJOR, VERSION_MINOR)?;
        Ok(Writer {
            out,
            buf: BytesMut::with_capacity(CHUNK_TARGET + 1024),
            enc: ChunkEncoder::new(),
            last_flush: Instant::now(),
            sync: None,
            bytes_written: 0,
            events_written: 0,
            chunks_written: 0,
        })
    }

    pub(super) fn new_with_version(
        out: &mut W,
        header: &Header,
        major: u16,
        minor: u16,
    ) -> io::Result<()> {
        let body = header.encode();
        let mut h = BytesMut::new();
        h.put_slice(&MAGIC);
        h.put_u16_le(major);
        h.put_u16_le(minor);
        h.put_u32_le(body.len() as u32);
        h.put_slice(&body);
        let crc = crc32fast::hash(&h[8..]);
        h.put_u32_le(crc);
        out.write_all(&h)
    }

    /// Adds an event; a full chunk, or one older than a second, goes to disk.
    pub fn push(&mut self, ev: &Event) -> io::Result<()> {
        self.enc.encode(&mut self.buf, ev);
        self.events_written += 1;
        if self.buf.len() >= CHUNK_TARGET || self.last_flush.elapsed() >= Duration::from_secs(1) {
            self.flush_chunk()?;
        }
        Ok(())
    }

    /// Flushes the open chunk if it has waited a second (call this when idle).
    pub fn tick(&mut self) -> io::Result<()> {
        if self.last_flush.elapsed() >= Duration::from_secs(1) {
            self.flush_chunk()?;
        }
        Ok(())
    }

    /// Writes the open chunk now, and syncs it.
    pub fn flush_chunk(&mut self) -> io::Result<()> {
        self.last_flush = Instant::now();
        if self.enc.events == 0 {
            return Ok(());
        }
        self.bytes_written += write_chunk(&mut self.out, self.sync, self.enc.events, &self.buf)?;
        self.chunks_written += 1;
        self.buf.clear();
        self.enc = ChunkEncoder::new();
        Ok(())
    }

    /// Flushes what is left without an end marker: what `aptrace import` does for a source
    /// that had none, so the copy says what the original said (not finished).
    pub fn finish_unmarked(mut self) -> io::Result<W> {
        self.flush_chunk()?;
        Ok(self.out)
    }

    /// Flushes what is left, writes the end marker (what tells a reader the recording was
    /// finished, not cut at a chunk boundary) and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_chunk()?;
        let mut p = BytesMut::with_capacity(END_PAYLOAD);
        p.put_slice(&END_TAG);
        p.put_u64_le(self.events_written);
        p.put_u64_le(self.chunks_written);
        self.bytes_written += write_chunk(&mut self.out, self.sync, 0, &p)?;
        Ok(self.out)
    }
}

/// Frames a payload as a chunk, writes it and syncs it; returns the bytes written.
fn write_chunk<W: Write>(
    out: &mut W,
    sync: Option<fn(&mut W) -> io::Result<()>>,
    count: u32,
    payload: &[u8],
) -> io::Result<u64> {
    let mut c = BytesMut::with_capacity(payload.len() + CHUNK_OVERHEAD);
    c.put_slice(&SYNC);
    c.put_u32_le(payload.len() as u32);
    c.put_u32_le(count);
    c.put_slice(payload);
    let crc = crc32fast::hash(&c[8..]);
    c.put_u32_le(crc);
    out.write_all(&c)?;
    out.flush()?;
    if let Some(sync) = sync {
        sync(out)?;
    }
    Ok(c.len() as u64)
}
