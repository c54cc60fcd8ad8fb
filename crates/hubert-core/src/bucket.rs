//! Length bucketing: batches of equal-length clips, so no padding ever enters the model and a
//! batched result equals the per-clip result.

use std::collections::BTreeMap;

/// A batch of clips of one length, with the caller's index of each clip.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The caller's index of each clip, in push order.
    pub indices: Vec<usize>,
    /// The clips; all have the same length.
    pub clips: Vec<Vec<f32>>,
}

impl Batch {
    /// Clip length in samples.
    pub fn clip_len(&self) -> usize {
        self.clips.first().map_or(0, Vec::len)
    }

    /// Borrowed clips, as [`crate::Hubert::embed`] takes them.
    pub fn clip_refs(&self) -> Vec<&[f32]> {
        self.clips.iter().map(Vec::as_slice).collect()
    }
}

/// Groups clips by exact length into batches of at most `batch_size` clips (and at most
/// `max_batch_samples` samples, to bound attention memory on long clips).
///
/// [`LengthBuckets::push`] returns a batch as soon as one is full. Clips wait in their bucket
/// otherwise; when more than `max_pending` clips wait in all, the fullest bucket is released
/// early (a smaller batch, same results), so memory stays bounded on ragged data.
/// [`LengthBuckets::flush`] releases everything left at the end.
#[derive(Debug)]
pub struct LengthBuckets {
    batch_size: usize,
    max_batch_samples: usize,
    max_pending: usize,
    pending: usize,
    buckets: BTreeMap<usize, Batch>,
}

impl LengthBuckets {
    /// Buckets for batches of up to `batch_size` clips (at least 1).
    pub fn new(batch_size: usize) -> Self {
        let batch_size = batch_size.max(1);
        Self {
            batch_size,
            max_batch_samples: usize::MAX,
            max_pending: 4 * batch_size,
            pending: 0,
            buckets: BTreeMap::new(),
        }
    }

    /// Caps a batch's total samples (a clip longer than the cap runs alone).
    pub fn with_max_batch_samples(mut self, max: usize) -> Self {
        self.max_batch_samples = max.max(1);
        self
    }

    /// Caps the clips waiting across all buckets (at least `batch_size`).
    pub fn with_max_pending(mut self, max: usize) -> Self {
        self.max_pending = max.max(self.batch_size);
        self
    }

    /// Adds a clip; returns the batches that are ready (full, or released to bound memory).
    pub fn push(&mut self, index: usize, clip: Vec<f32>) -> Vec<Batch> {
        let len = clip.len();
        let cap = (self.max_batch_samples / len.max(1)).clamp(1, self.batch_size);
        let bucket = self.buckets.entry(len).or_insert_with(|| Batch {
            indices: Vec::new(),
            clips: Vec::new(),
        });
        bucket.indices.push(index);
        bucket.clips.push(clip);
        self.pending += 1;
        let mut ready = Vec::new();
        if bucket.clips.len() >= cap {
            let batch = self.buckets.remove(&len).expect("bucket just used");
            self.pending -= batch.clips.len();
            ready.push(batch);
        }
        while self.pending > self.max_pending {
            let fullest = *self
                .buckets
                .iter()
                .max_by_key(|(_, b)| b.clips.len())
                .map(|(len, _)| len)
                .expect("pending > 0 implies a bucket");
            let batch = self.buckets.remove(&fullest).expect("key from the map");
            self.pending -= batch.clips.len();
            ready.push(batch);
        }
        ready
    }

    /// Releases every waiting clip, shortest length first.
    pub fn flush(&mut self) -> Vec<Batch> {
        self.pending = 0;
        std::mem::take(&mut self.buckets).into_values().collect()
    }

    /// Clips waiting in buckets.
    pub fn pending(&self) -> usize {
        self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_lengths_fill_batches_and_every_clip_comes_out_once() {
        let mut b = LengthBuckets::new(2);
        let mut out = Vec::new();
        for (i, len) in [5, 7, 5, 7, 9, 5].into_iter().enumerate() {
            out.extend(b.push(i, vec![i as f32; len]));
        }
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].indices, vec![0, 2]);
        assert_eq!(out[1].indices, vec![1, 3]);
        out.extend(b.flush());
        let mut seen: Vec<usize> = out.iter().flat_map(|b| b.indices.clone()).collect();
        seen.sort();
        assert_eq!(seen, (0..6).collect::<Vec<_>>());
        for batch in &out {
            assert!(batch.clips.iter().all(|c| c.len() == batch.clip_len()));
            for (i, c) in batch.indices.iter().zip(&batch.clips) {
                assert_eq!(c[0], *i as f32);
            }
        }
        assert_eq!(b.pending(), 0);
    }

    #[test]
    fn ragged_data_is_released_to_bound_memory() {
        let mut b = LengthBuckets::new(4).with_max_pending(5);
        let mut released = 0;
        for i in 0..100 {
            released += b
                .push(i, vec![0.0; 10 + i])
                .iter()
                .map(|b| b.clips.len())
                .sum::<usize>();
            assert!(b.pending() <= 5);
        }
        released += b.flush().iter().map(|b| b.clips.len()).sum::<usize>();
        assert_eq!(released, 100);
    }

    #[test]
    fn long_clips_respect_the_sample_cap() {
        let mut b = LengthBuckets::new(8).with_max_batch_samples(250);
        let ready = b.push(0, vec![0.0; 100]);
        assert!(ready.is_empty());
        let ready = b.push(1, vec![0.0; 100]);
        assert_eq!(
            ready.len(),
            1,
            "two 100-sample clips fill a 250-sample batch"
        );
        let ready = b.push(2, vec![0.0; 1000]);
        assert_eq!(ready[0].indices, vec![2], "a clip over the cap runs alone");
    }
}
