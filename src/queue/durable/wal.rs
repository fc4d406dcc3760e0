//! smsgate's own write-ahead log in front of fjall.
//!
//! fjall's inserts wait for the tree's version lock, and fjall holds that
//! lock for writing while it registers a memtable it has written out (file
//! and directory syncs included): for 25–60 ms at a time, every insert
//! stalls. A commit that waits for fjall therefore has a long tail under
//! load. With this log a commit waits only for an append and one
//! `fdatasync` of a file nobody else locks; fjall applies the same batch
//! behind it ([`super::applier`]) and its journal need not be synced.
//!
//! The log is a directory of segment files named by the sequence number of
//! their first batch. A record is `len u32 | xxh3 u64 | seq u64 | batch`,
//! little-endian; a batch is `count u32` and per write `op u8 | space u8 |
//! key len u32 | key` and, for a put, `value len u32 | value`. Segments are
//! removed once fjall holds their batches on disk. On open every batch
//! still in the log is applied again: puts and deletes replayed in order end
//! in the same state whatever prefix fjall already had.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use super::kv::{Space, Write};
use crate::queue::StoreError;

/// Bytes after which the log starts a new segment. Each closed segment
/// costs a sync of fjall's journal before it is removed; small segments keep
/// those syncs small, and a large sync is what holds up the log's own
/// `fdatasync` on a shared disk (64 MiB segments: ~10 commits of 25 ms or
/// more per minute at 10,000 msg/s; 8 MiB: ~1).
pub(crate) const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;

/// Bytes of a record's header: length, checksum, sequence number.
const HEADER: usize = 4 + 8 + 8;

const PUT: u8 = 0;
const DELETE: u8 = 1;

fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Backend(format!(
        "write-ahead log: cannot {what} {}: {e}",
        path.display()
    ))
}

/// The segment being appended to.
pub(crate) struct Wal {
    dir: PathBuf,
    file: File,
    path: PathBuf,
    /// Bytes of whole records in the current segment.
    size: u64,
    next_seq: u64,
    sync: bool,
    buf: Vec<u8>,
    segment_bytes: u64,
    /// A failed append that could not be undone: nothing more is appended.
    broken: bool,
}

impl Wal {
    /// Replays every whole batch in `dir`'s segments through `apply`, in
    /// order, and returns the segments read (remove them once what `apply`
    /// did is durable). Stops at the first torn or corrupt record: a crash
    /// mid-append leaves one at the end of the last segment.
    pub(crate) fn replay(
        dir: &Path,
        mut apply: impl FnMut(Vec<Write>) -> Result<(), StoreError>,
    ) -> Result<Vec<PathBuf>, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
        let mut segments: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
            .map_err(|e| io("list", dir, e))?
            .filter_map(|entry| {
                let path = entry.ok()?.path();
                let seq = path
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".wal")?
                    .parse()
                    .ok()?;
                Some((seq, path))
            })
            .collect();
        segments.sort();
        let mut stopped = false;
        for (i, (_, path)) in segments.iter().enumerate() {
            if stopped {
                tracing::warn!(segment = %path.display(), "write-ahead log segment after a corrupt record skipped");
                continue;
            }
            let mut bytes = Vec::new();
            File::open(path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|e| io("read", path, e))?;
            let (batches, whole) = decode_segment(&bytes);
            for batch in batches {
                apply(batch)?;
            }
            if whole < bytes.len() {
                stopped = true;
                if i + 1 < segments.len() {
                    tracing::warn!(segment = %path.display(), at = whole, "corrupt write-ahead log record: replay stops here");
                }
            }
        }
        Ok(segments.into_iter().map(|(_, p)| p).collect())
    }

    /// Starts a new segment in `dir` (after [`Wal::replay`]).
    pub(crate) fn create(dir: &Path, sync: bool) -> Result<Self, StoreError> {
        let path = segment_path(dir, 0);
        let file = new_segment(dir, &path, sync)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            file,
            path,
            size: 0,
            next_seq: 0,
            sync,
            buf: Vec::new(),
            segment_bytes: SEGMENT_BYTES,
            broken: false,
        })
    }

    /// Appends one batch (and, when the log syncs, `fdatasync`s it).
    /// Returns its sequence number and the segment it closed, if it started
    /// a new one: that segment holds only earlier batches.
    pub(crate) fn append(
        &mut self,
        writes: &[Write],
    ) -> Result<(u64, Option<PathBuf>), StoreError> {
        if self.broken {
            return Err(StoreError::Backend(
                "write-ahead log: an earlier append failed".into(),
            ));
        }
        let closed = if self.size >= self.segment_bytes {
            Some(self.roll()?)
        } else {
            None
        };
        let seq = self.next_seq;
        encode_record(&mut self.buf, seq, writes);
        let written = self.file.write_all(&self.buf).and_then(|()| {
            if self.sync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            // Cut the partial record off, or later records would be lost
            // behind it on replay.
            let undone = self
                .file
                .set_len(self.size)
                .and_then(|()| self.file.seek(SeekFrom::Start(self.size)).map(|_| ()));
            if undone.is_err() {
                self.broken = true;
            }
            return Err(io("append to", &self.path, e));
        }
        self.size += self.buf.len() as u64;
        self.next_seq += 1;
        Ok((seq, closed))
    }

    /// The sequence number the next batch gets.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Empties the log: everything in it is durable in fjall.
    pub(crate) fn clear(&mut self) -> Result<Vec<PathBuf>, StoreError> {
        if self.size == 0 {
            return Ok(Vec::new());
        }
        Ok(vec![self.roll()?])
    }

    /// Closes the current segment and starts the next; returns the closed one.
    fn roll(&mut self) -> Result<PathBuf, StoreError> {
        let path = segment_path(&self.dir, self.next_seq);
        let file = new_segment(&self.dir, &path, self.sync)?;
        self.file = file;
        self.size = 0;
        Ok(std::mem::replace(&mut self.path, path))
    }

    #[cfg(test)]
    pub(crate) fn with_segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes;
        self
    }
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.wal"))
}

fn new_segment(dir: &Path, path: &Path, sync: bool) -> Result<File, StoreError> {
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|e| io("create", path, e))?;
    if sync {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("sync", dir, e))?;
    }
    Ok(file)
}

/// Removes segments whose batches fjall holds durably.
pub(crate) fn remove_segments(paths: &[PathBuf]) {
    for path in paths {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(segment = %path.display(), error = %e, "cannot remove write-ahead log segment");
        }
    }
}

fn encode_record(buf: &mut Vec<u8>, seq: u64, writes: &[Write]) {
    buf.clear();
    buf.extend_from_slice(&[0; HEADER]);
    buf.extend_from_slice(&(writes.len() as u32).to_le_bytes());
    for w in writes {
        match w {
            Write::Put(s, k, v) => {
                buf.extend_from_slice(&[PUT, *s as u8]);
                put_bytes(buf, k);
                put_bytes(buf, v);
            }
            Write::Delete(s, k) => {
                buf.extend_from_slice(&[DELETE, *s as u8]);
                put_bytes(buf, k);
            }
        }
    }
    let body_len = (buf.len() - HEADER) as u32;
    buf[12..20].copy_from_slice(&seq.to_le_bytes());
    let sum = xxhash_rust::xxh3::xxh3_64(&buf[12..]);
    buf[0..4].copy_from_slice(&body_len.to_le_bytes());
    buf[4..12].copy_from_slice(&sum.to_le_bytes());
}

fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    buf.extend_from_slice(bytes);
}

/// The whole, intact batches at the start of a segment, and the bytes they take.
fn decode_segment(bytes: &[u8]) -> (Vec<Vec<Write>>, usize) {
    let mut batches = Vec::new();
    let mut at = 0;
    while let Some((batch, len)) = decode_record(&bytes[at..]) {
        batches.push(batch);
        at += len;
    }
    (batches, at)
}

fn decode_record(bytes: &[u8]) -> Option<(Vec<Write>, usize)> {
    let body_len = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let sum = u64::from_le_bytes(bytes.get(4..12)?.try_into().ok()?);
    let end = HEADER.checked_add(body_len)?;
    let checked = bytes.get(12..end)?;
    if xxhash_rust::xxh3::xxh3_64(checked) != sum {
        return None;
    }
    let mut r = Reader(bytes.get(HEADER..end)?);
    let count = r.u32()?;
    let mut writes = Vec::with_capacity(count.min(65_536) as usize);
    for _ in 0..count {
        let op = r.u8()?;
        let space = Space::from_index(r.u8()?)?;
        let key = r.bytes()?;
        writes.push(match op {
            PUT => Write::Put(space, key, r.bytes()?),
            DELETE => Write::Delete(space, key),
            _ => return None,
        });
    }
    Some((writes, end))
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = self.u32()? as usize;
        self.take(n).map(<[u8]>::to_vec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(i: u8) -> Vec<Write> {
        vec![
            Write::Put(Space::Messages, vec![i], vec![i; 100]),
            Write::Delete(Space::Ready, vec![b'r', i]),
        ]
    }

    fn replayed(dir: &Path) -> (Vec<Vec<Write>>, Vec<PathBuf>) {
        let mut seen = Vec::new();
        let segments = Wal::replay(dir, |b| {
            seen.push(b);
            Ok(())
        })
        .expect("replays");
        (seen, segments)
    }

    #[test]
    fn batches_come_back_in_order_across_segments() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut wal = Wal::create(dir.path(), true)
            .expect("creates")
            .with_segment_bytes(300);
        let mut closed = Vec::new();
        for i in 0..10 {
            let (seq, c) = wal.append(&batch(i)).expect("appends");
            assert_eq!(seq, u64::from(i));
            closed.extend(c);
        }
        assert!(closed.len() >= 3, "300-byte segments: {closed:?}");
        drop(wal);
        let (seen, segments) = replayed(dir.path());
        assert_eq!(seen, (0..10).map(batch).collect::<Vec<_>>());
        assert_eq!(segments.len(), closed.len() + 1);
    }

    /// A log of batches 0, 1 and 2 in one segment; returns that segment.
    fn three_batches(dir: &Path) -> PathBuf {
        let mut wal = Wal::create(dir, false).expect("creates");
        for i in 0..3 {
            wal.append(&batch(i)).expect("appends");
        }
        wal.path.clone()
    }

    #[test]
    fn a_torn_last_record_is_dropped_and_the_rest_replayed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = three_batches(dir.path());
        let len = std::fs::metadata(&path).expect("segment").len();
        let f = OpenOptions::new().write(true).open(&path).expect("opens");
        f.set_len(len - 7).expect("truncates");
        let (seen, _) = replayed(dir.path());
        assert_eq!(seen, (0..2).map(batch).collect::<Vec<_>>());
    }

    #[test]
    fn a_flipped_byte_ends_replay_at_that_record() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = three_batches(dir.path());
        let mut bytes = std::fs::read(&path).expect("reads");
        let second = bytes.len() / 3 + 40;
        bytes[second] ^= 0x55;
        std::fs::write(&path, bytes).expect("writes");
        let (seen, _) = replayed(dir.path());
        assert_eq!(seen, vec![batch(0)]);
    }

    #[test]
    fn clearing_closes_the_segment_for_removal() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut wal = Wal::create(dir.path(), false).expect("creates");
        wal.append(&batch(1)).expect("appends");
        let closed = wal.clear().expect("clears");
        remove_segments(&closed);
        wal.append(&batch(2)).expect("appends");
        drop(wal);
        let (seen, _) = replayed(dir.path());
        assert_eq!(seen, vec![batch(2)]);
    }
}
