//! [`LoadMany`]: decode many files on rayon's pool ahead of the consumer, in input order.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::Arc;

use crate::AudioError;

/// One finished clip: its index in the input list and its result.
type Slot = (usize, Result<Vec<f32>, AudioError>);

/// Iterator returned by [`load_many`](crate::load_many): yields `(index, result)` for every
/// input path, in input order, while up to `lookahead` later files decode in parallel on
/// rayon's global pool.
///
/// Memory stays bounded: a file is only started when its index is within `lookahead` of the
/// next index to yield, so at most `lookahead` decoded clips (finished or in progress) exist
/// besides the one the consumer holds. Dropping the iterator early cancels the files not
/// started yet. Safe to drive from inside a rayon worker: while waiting it helps run pool
/// tasks instead of blocking the thread.
pub struct LoadMany {
    paths: Vec<PathBuf>,
    lookahead: usize,
    /// Next index to start decoding.
    next_start: usize,
    /// Next index to yield.
    next_yield: usize,
    /// Finished out of order, waiting for their turn.
    ready: HashMap<usize, Result<Vec<f32>, AudioError>>,
    sender: Sender<Slot>,
    receiver: Receiver<Slot>,
    cancelled: Arc<AtomicBool>,
}

impl LoadMany {
    pub(crate) fn new(paths: Vec<PathBuf>, lookahead: usize) -> LoadMany {
        let (sender, receiver) = channel();
        LoadMany {
            paths,
            lookahead: lookahead.max(1),
            next_start: 0,
            next_yield: 0,
            ready: HashMap::new(),
            sender,
            receiver,
            cancelled: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Start files until `lookahead` of them are in flight or waiting.
    fn top_up(&mut self) {
        while self.next_start < self.paths.len()
            && self.next_start < self.next_yield + self.lookahead
        {
            let index = self.next_start;
            let path = std::mem::take(&mut self.paths[index]);
            let sender = self.sender.clone();
            let cancelled = Arc::clone(&self.cancelled);
            rayon::spawn(move || {
                if cancelled.load(Ordering::Relaxed) {
                    return;
                }
                let result = crate::load(&path);
                // The receiver is gone only when the iterator was dropped: nothing to do.
                let _ = sender.send((index, result));
            });
            self.next_start += 1;
        }
    }

    fn wait_one(&mut self) -> Slot {
        if rayon::current_thread_index().is_some() {
            // On a pool thread: blocking could starve the very tasks we wait for.
            loop {
                match self.receiver.try_recv() {
                    Ok(slot) => return slot,
                    Err(TryRecvError::Empty) => {
                        if rayon::yield_now() != Some(rayon::Yield::Executed) {
                            std::thread::yield_now();
                        }
                    }
                    Err(TryRecvError::Disconnected) => unreachable!("we hold a sender"),
                }
            }
        } else {
            self.receiver.recv().expect("we hold a sender")
        }
    }
}

impl Iterator for LoadMany {
    type Item = (usize, Result<Vec<f32>, AudioError>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.next_yield >= self.paths.len() {
            return None;
        }
        self.top_up();
        let index = self.next_yield;
        let result = loop {
            if let Some(result) = self.ready.remove(&index) {
                break result;
            }
            let (i, result) = self.wait_one();
            if i == index {
                break result;
            }
            self.ready.insert(i, result);
        };
        self.next_yield += 1;
        self.top_up();
        Some((index, result))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.paths.len() - self.next_yield;
        (left, Some(left))
    }
}

impl ExactSizeIterator for LoadMany {}

impl Drop for LoadMany {
    fn drop(&mut self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for LoadMany {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadMany")
            .field("len", &self.paths.len())
            .field("lookahead", &self.lookahead)
            .field("next_yield", &self.next_yield)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_more_than_lookahead_clips_ahead() {
        let mut iter = LoadMany::new(vec![PathBuf::from("/no/such/file.wav"); 25], 3);
        let mut seen = 0;
        while let Some((index, result)) = iter.next() {
            assert_eq!(index, seen);
            assert!(result.is_err());
            // Started but not yet yielded (in flight or finished): at most `lookahead`.
            assert!(iter.next_start - iter.next_yield <= 3);
            assert!(iter.ready.len() <= 3);
            seen += 1;
        }
        assert_eq!(seen, 25);
    }
}
