//! One reader thread, several converting threads, and the caller consuming results in file order.
//! Order matters: the first occurrence of a key wins, and output must be byte-identical run to run.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};

use super::convert::{Converted, Converter};
use super::read::{Chunk, FileError, Hangup, ReadStop};
use crate::error::Result;

/// Run `read` (which emits chunks), convert the chunks on `workers` threads and hand them to
/// `consume` in the order they were read. Returns the file error that stopped the reader, if any.
pub fn run(
    workers: usize,
    converter: &Converter,
    read: impl FnOnce(&mut dyn FnMut(Chunk) -> Result<(), Hangup>) -> Result<(), ReadStop> + Send,
    mut consume: impl FnMut(Converted) -> Result<()>,
) -> Result<Option<FileError>> {
    let workers = workers.max(1);
    let (chunk_tx, chunk_rx) = sync_channel::<Chunk>(workers * 2);
    let (done_tx, done_rx) = sync_channel::<Converted>(workers * 2);
    let chunk_rx = Arc::new(Mutex::new(chunk_rx));

    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let mut seq = 0;
            let mut emit = |mut chunk: Chunk| {
                chunk.seq = seq;
                seq += 1;
                chunk_tx.send(chunk).map_err(|_| Hangup)
            };
            read(&mut emit)
        });
        for _ in 0..workers {
            let chunk_rx = chunk_rx.clone();
            let done_tx = done_tx.clone();
            scope.spawn(move || {
                while let Some(chunk) = next_chunk(&chunk_rx) {
                    if done_tx.send(converter.convert(chunk)).is_err() {
                        return;
                    }
                }
            });
        }
        // Only the workers hold the queues now: when they stop, the reader's next send fails.
        drop(done_tx);
        drop(chunk_rx);

        let consumed = consume_in_order(done_rx, &mut consume);
        let read_result = reader.join().expect("reader thread panicked");
        consumed?;
        match read_result {
            Ok(()) | Err(ReadStop::Hangup) => Ok(None),
            Err(ReadStop::File(e)) => Ok(Some(e)),
        }
    })
}

fn next_chunk(chunk_rx: &Mutex<Receiver<Chunk>>) -> Option<Chunk> {
    chunk_rx.lock().expect("chunk queue poisoned").recv().ok()
}

/// Results arrive in any order; release them by sequence number. On the first error the receiver
/// is dropped, which stops the workers and, through them, the reader.
fn consume_in_order(done_rx: Receiver<Converted>, consume: &mut impl FnMut(Converted) -> Result<()>) -> Result<()> {
    let mut waiting: BTreeMap<usize, Converted> = BTreeMap::new();
    let mut next = 0;
    for converted in done_rx {
        waiting.insert(converted.seq, converted);
        while let Some(ready) = waiting.remove(&next) {
            consume(ready)?;
            next += 1;
        }
    }
    Ok(())
}
