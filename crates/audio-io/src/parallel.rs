//! [`LoadMany`]: decode many files on rayon's pool ahead of the consumer, in input order,
//! within a [`Lookahead`] bound in clips and in 16 kHz samples.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::Arc;

use crate::AudioError;

/// Default sample budget of the look-ahead: 32 Mi samples of 16 kHz mono `f32` (128 MiB,
/// about 35 minutes of audio) decoded or decoding ahead of the consumer.
pub const DEFAULT_LOOKAHEAD_SAMPLES: u64 = 32 * 1024 * 1024;

/// How far [`LoadMany`] may decode ahead of its consumer: both limits hold at once.
///
/// A clip is *ahead* from the moment its decode is started until the iterator yields it
/// (the clip the consumer holds afterwards is not counted). At most [`clips`](Self::clips)
/// clips are ahead, and the clips ahead weigh at most [`samples`](Self::samples) 16 kHz
/// samples in all, except that one clip is always allowed: a clip larger than the sample
/// budget still decodes, alone (nothing else is started until it is yielded).
///
/// A clip still decoding weighs its header's length, `round(frames * 16000 / rate)`
/// ([`AudioInfo::output_len`](crate::AudioInfo::output_len), saturating), read with
/// [`probe`](crate::probe) on the consumer's thread just before the decode is started; a
/// header without a length, or one that cannot be read, weighs the whole budget, so that
/// clip runs alone. A finished clip waiting for its turn weighs its real decoded length.
/// The budget is therefore exact for WAV and for any file whose header states its length
/// truly; a file that decodes to more than its header says can take the total past the
/// budget until it is yielded, and nothing new starts meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lookahead {
    /// Most clips ahead of the consumer (0 is treated as 1).
    pub clips: usize,
    /// Most 16 kHz samples ahead of the consumer (besides a single clip alone). `u64::MAX`
    /// means no sample bound: then no header is probed.
    pub samples: u64,
}

impl Lookahead {
    /// At most `clips` clips ahead, with no bound in samples (what [`load_many`](crate::load_many)
    /// uses).
    pub fn clips(clips: usize) -> Lookahead {
        Lookahead {
            clips,
            samples: u64::MAX,
        }
    }

    /// At most `clips` clips and [`DEFAULT_LOOKAHEAD_SAMPLES`] samples ahead.
    pub fn with_default_samples(clips: usize) -> Lookahead {
        Lookahead {
            clips,
            samples: DEFAULT_LOOKAHEAD_SAMPLES,
        }
    }

    fn unbounded_samples(&self) -> bool {
        self.samples == u64::MAX
    }
}

/// One finished clip: its index in the input list and its result.
type Slot = (usize, Result<Vec<f32>, AudioError>);

/// Iterator returned by [`load_many`](crate::load_many) and
/// [`load_many_bounded`](crate::load_many_bounded): yields `(index, result)` for every input
/// path, in input order, while later files decode in parallel on rayon's global pool.
///
/// Memory stays bounded: files are started in input order, and a file is only started when
/// it fits in the [`Lookahead`] (clips and samples) next to the files already started but
/// not yet yielded, or when no file is ahead at all; see [`Lookahead`] for how a clip is
/// weighed. Dropping the iterator early cancels the files not started yet. Safe to drive
/// from inside a rayon worker: while waiting it helps run pool tasks instead of blocking the
/// thread.
pub struct LoadMany {
    paths: Vec<PathBuf>,
    limit: Lookahead,
    /// Next index to start decoding.
    next_start: usize,
    /// Weight of `next_start`, once probed (kept while it does not fit yet).
    next_weight: Option<u64>,
    /// Next index to yield.
    next_yield: usize,
    /// Weight in samples of every file started but not yet yielded: its header estimate while
    /// it decodes, its real length once finished.
    weights: HashMap<usize, u64>,
    /// Sum of `weights` (u128: no overflow even if several weigh `u64::MAX`).
    ahead_samples: u128,
    /// Finished out of order, waiting for their turn.
    ready: HashMap<usize, Result<Vec<f32>, AudioError>>,
    sender: Sender<Slot>,
    receiver: Receiver<Slot>,
    cancelled: Arc<AtomicBool>,
    /// `(next_yield, next_start)` right after every start, for the tests' bound checks.
    #[cfg(test)]
    start_log: Vec<(usize, usize)>,
}

/// Weight of a file not decoded yet: its header's 16 kHz length, or the whole `budget` when
/// the header does not say or cannot be read.
fn header_weight(path: &Path, budget: u64) -> u64 {
    crate::probe(path)
        .ok()
        .and_then(|info| info.output_len())
        .unwrap_or(budget)
}

impl LoadMany {
    pub(crate) fn new(paths: Vec<PathBuf>, limit: Lookahead) -> LoadMany {
        let (sender, receiver) = channel();
        LoadMany {
            paths,
            limit: Lookahead {
                clips: limit.clips.max(1),
                samples: limit.samples,
            },
            next_start: 0,
            next_weight: None,
            next_yield: 0,
            weights: HashMap::new(),
            ahead_samples: 0,
            ready: HashMap::new(),
            sender,
            receiver,
            cancelled: Arc::new(AtomicBool::new(false)),
            #[cfg(test)]
            start_log: Vec::new(),
        }
    }

    /// Start files, in order, while the next one fits in the look-ahead (or nothing is
    /// ahead).
    fn top_up(&mut self) {
        while self.next_start < self.paths.len()
            && self.next_start < self.next_yield + self.limit.clips
        {
            let index = self.next_start;
            let weight = if self.limit.unbounded_samples() {
                0
            } else {
                match self.next_weight {
                    Some(weight) => weight,
                    None => {
                        let weight = header_weight(&self.paths[index], self.limit.samples);
                        self.next_weight = Some(weight);
                        weight
                    }
                }
            };
            let nothing_ahead = self.next_start == self.next_yield;
            if !nothing_ahead
                && self.ahead_samples + u128::from(weight) > u128::from(self.limit.samples)
            {
                break;
            }
            self.next_weight = None;
            self.weights.insert(index, weight);
            self.ahead_samples += u128::from(weight);
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
            #[cfg(test)]
            self.start_log.push((self.next_yield, self.next_start));
        }
    }

    /// Set the weight of file `index` (started, not yielded) to `weight`.
    fn reweigh(&mut self, index: usize, weight: u64) {
        let old = self
            .weights
            .insert(index, weight)
            .expect("only started files finish");
        self.ahead_samples = self.ahead_samples - u128::from(old) + u128::from(weight);
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
            if !self.limit.unbounded_samples() {
                // From its header estimate to its real length; a clip shorter than its
                // header said (or a failed one) may make room for the next file.
                let real = result.as_ref().map_or(0, |clip| clip.len() as u64);
                self.reweigh(i, real);
            }
            self.ready.insert(i, result);
            self.top_up();
        };
        let weight = self
            .weights
            .remove(&index)
            .expect("yielded files were started");
        self.ahead_samples -= u128::from(weight);
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
            .field("lookahead", &self.limit)
            .field("next_yield", &self.next_yield)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_more_than_lookahead_clips_ahead() {
        let mut iter = LoadMany::new(
            vec![PathBuf::from("/no/such/file.wav"); 25],
            Lookahead::clips(3),
        );
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

    /// 44.1 kHz mono 16-bit WAVs with the given frame counts; returns paths and 16 kHz lengths.
    fn write_wavs(dir: &Path, frames: &[u32]) -> (Vec<PathBuf>, Vec<u64>) {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 44_100,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut paths = Vec::new();
        let mut lengths = Vec::new();
        for (i, &n) in frames.iter().enumerate() {
            let path = dir.join(format!("clip_{i:03}.wav"));
            let mut writer = hound::WavWriter::create(&path, spec).unwrap();
            for t in 0..n {
                let x = (f64::from(t) * 440.0 * std::f64::consts::TAU / 44_100.0).sin();
                writer.write_sample((x * 8_000.0) as i16).unwrap();
            }
            writer.finalize().unwrap();
            paths.push(path);
            lengths.push(crate::output_len(u64::from(n), 44_100));
        }
        (paths, lengths)
    }

    /// Drive `iter` to the end; for every moment right after a start (the only moments the
    /// clips ahead grow), the clips ahead as `(first, end)` index ranges.
    fn ahead_ranges(mut iter: LoadMany, lengths: &[u64]) -> Vec<(usize, usize)> {
        let mut seen = 0;
        for (index, result) in iter.by_ref() {
            assert_eq!(index, seen);
            assert_eq!(result.unwrap().len() as u64, lengths[index]);
            seen += 1;
        }
        assert_eq!(seen, lengths.len());
        std::mem::take(&mut iter.start_log)
    }

    /// Ranges whose clips weigh more than `budget` samples while more than one is ahead.
    fn over_budget(ranges: &[(usize, usize)], lengths: &[u64], budget: u64) -> usize {
        ranges
            .iter()
            .filter(|&&(first, end)| {
                end - first > 1 && lengths[first..end].iter().sum::<u64>() > budget
            })
            .count()
    }

    #[test]
    fn samples_ahead_never_exceed_the_budget_unless_alone() {
        let dir = tempfile::tempdir().unwrap();
        // 0.1 s to 1.3 s clips (1600 to 20 800 samples at 16 kHz), and three longer than the
        // budget (indices 7, 8 and 20).
        let mut frames: Vec<u32> = (0..30u32).map(|i| (i * 7 % 13 + 1) * 4_410).collect();
        frames[7] = 200_000;
        frames[8] = 150_000;
        frames[20] = 300_000;
        let (paths, lengths) = write_wavs(dir.path(), &frames);
        let budget = 40_000;
        assert!(lengths[7] > budget && lengths[8] > budget && lengths[20] > budget);

        let limit = Lookahead {
            clips: 8,
            samples: budget,
        };
        let ranges = ahead_ranges(LoadMany::new(paths.clone(), limit), &lengths);
        assert_eq!(over_budget(&ranges, &lengths, budget), 0, "{ranges:?}");
        assert!(ranges.iter().all(|&(first, end)| end - first <= 8));
        // The budget still lets several small clips decode at once...
        assert!(ranges.iter().any(|&(first, end)| end - first >= 2));
        // ...and each clip longer than the budget was started, and was alone.
        for big in [7, 8, 20] {
            assert!(ranges.contains(&(big, big + 1)), "{big}: {ranges:?}");
        }

        // The same list bounded in clips only goes over: the check above can fail.
        let ranges = ahead_ranges(LoadMany::new(paths, Lookahead::clips(8)), &lengths);
        assert!(over_budget(&ranges, &lengths, budget) > 0);
    }

    #[test]
    fn a_clip_weighs_its_header_length_or_the_whole_budget() {
        let dir = tempfile::tempdir().unwrap();
        let (paths, lengths) = write_wavs(dir.path(), &[44_100, 12_345]);
        assert_eq!(header_weight(&paths[0], 99), 16_000);
        assert_eq!(header_weight(&paths[1], 99), lengths[1]);
        // A header that cannot be read (missing file, not audio) weighs the whole budget.
        assert_eq!(header_weight(&dir.path().join("missing.wav"), 99), 99);
        let text = dir.path().join("notes.wav");
        std::fs::write(&text, "not audio at all").unwrap();
        assert_eq!(header_weight(&text, 99), 99);
    }

    #[test]
    fn weights_follow_the_clips_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let frames: Vec<u32> = (0..12u32).map(|i| 2_000 + 997 * i).collect();
        let (mut paths, lengths) = write_wavs(dir.path(), &frames);
        paths.insert(5, dir.path().join("missing.wav"));
        let mut iter = LoadMany::new(
            paths,
            Lookahead {
                clips: 4,
                samples: 10_000,
            },
        );
        let mut count = 0;
        while let Some((index, result)) = iter.next() {
            assert_eq!(index, count);
            assert_eq!(result.is_err(), index == 5);
            // The running sum matches the per-clip weights, and only started clips weigh.
            assert_eq!(
                iter.ahead_samples,
                iter.weights.values().map(|&w| u128::from(w)).sum::<u128>()
            );
            assert_eq!(iter.weights.len(), iter.next_start - iter.next_yield);
            count += 1;
        }
        assert_eq!(count, lengths.len() + 1);
        assert_eq!(iter.ahead_samples, 0);
    }
}
