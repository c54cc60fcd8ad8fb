//! `load_many` and `load_many_bounded`: input order, per-file errors in their own slot,
//! bounded lookahead (clips, and samples), no deadlock when driven from inside a rayon pool.

mod common;

use std::path::PathBuf;

use audio_io::{load_many, load_many_bounded, output_len, AudioError, Lookahead};
use common::{fixture, sine_interleaved, Encoding, WavSpec};

/// Files whose decoded lengths identify them: clip `i` has `1000 + 37 * i` frames at 22.05 kHz.
fn make_clips(dir: &tempfile::TempDir, count: usize) -> Vec<(PathBuf, u64)> {
    (0..count)
        .map(|i| {
            let frames = 1_000 + 37 * i;
            let path = dir.path().join(format!("clip_{i:03}.wav"));
            let x = sine_interleaved(440.0, 22_050, frames, 1, 0.5);
            std::fs::write(&path, WavSpec::new(22_050, 1, Encoding::Pcm(16)).build(&x)).unwrap();
            (path, output_len(frames as u64, 22_050))
        })
        .collect()
}

#[test]
fn results_come_back_in_input_order() {
    let dir = tempfile::tempdir().unwrap();
    let clips = make_clips(&dir, 40);
    for lookahead in [0, 1, 3, 64] {
        let paths: Vec<PathBuf> = clips.iter().map(|(p, _)| p.clone()).collect();
        let iter = load_many(paths, lookahead);
        assert_eq!(iter.len(), 40);
        let got: Vec<(usize, usize)> = iter.map(|(i, r)| (i, r.unwrap().len())).collect();
        let want: Vec<(usize, usize)> = clips
            .iter()
            .enumerate()
            .map(|(i, (_, n))| (i, *n as usize))
            .collect();
        assert_eq!(got, want, "lookahead {lookahead}");
    }
}

/// Three good clips with a missing file, a non-audio file and an MP3 fixture between them.
fn mixed_paths(dir: &tempfile::TempDir, clips: &[(PathBuf, u64)]) -> Vec<PathBuf> {
    let not_audio = dir.path().join("notes.wav");
    std::fs::write(&not_audio, "not audio at all").unwrap();
    vec![
        clips[0].0.clone(),
        dir.path().join("missing.wav"),
        clips[1].0.clone(),
        not_audio,
        fixture("speech_44k1_mono.mp3").path(),
        clips[2].0.clone(),
    ]
}

/// The results of [`mixed_paths`]: in order, each error in its own slot.
fn assert_mixed_results(
    results: &[(usize, Result<Vec<f32>, AudioError>)],
    clips: &[(PathBuf, u64)],
) {
    assert_eq!(results.len(), 6);
    assert_eq!(
        results.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4, 5]
    );
    assert_eq!(results[0].1.as_ref().unwrap().len() as u64, clips[0].1);
    assert!(
        matches!(&results[1].1, Err(AudioError::Io { path, .. }) if path.ends_with("missing.wav"))
    );
    assert_eq!(results[2].1.as_ref().unwrap().len() as u64, clips[1].1);
    assert!(
        matches!(&results[3].1, Err(AudioError::NotAudio { path, .. }) if path.ends_with("notes.wav"))
    );
    assert_eq!(results[4].1.as_ref().unwrap().len(), 16_000);
    assert_eq!(results[5].1.as_ref().unwrap().len() as u64, clips[2].1);
}

#[test]
fn errors_stay_in_their_slot() {
    let dir = tempfile::tempdir().unwrap();
    let clips = make_clips(&dir, 6);
    let paths = mixed_paths(&dir, &clips);
    let results: Vec<_> = load_many(paths, 2).collect();
    assert_mixed_results(&results, &clips);
}

#[test]
fn same_results_as_sequential_load() {
    let dir = tempfile::tempdir().unwrap();
    let clips = make_clips(&dir, 10);
    let paths: Vec<PathBuf> = clips.iter().map(|(p, _)| p.clone()).collect();
    for (i, result) in load_many(paths.clone(), 4) {
        assert_eq!(result.unwrap(), audio_io::load(&paths[i]).unwrap());
    }
}

#[test]
fn works_inside_a_single_thread_rayon_pool_and_stops_early() {
    let dir = tempfile::tempdir().unwrap();
    let clips = make_clips(&dir, 12);
    let paths: Vec<PathBuf> = clips.iter().map(|(p, _)| p.clone()).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    // The consumer runs on the pool's only thread: waiting must not starve the decodes.
    let lengths: Vec<usize> = pool.install(|| {
        load_many(paths.clone(), 4)
            .map(|(_, r)| r.unwrap().len())
            .collect()
    });
    assert_eq!(lengths.len(), 12);
    // Dropping the iterator after two items returns promptly and cancels the rest.
    let first_two: Vec<usize> = load_many(paths, 4).take(2).map(|(i, _)| i).collect();
    assert_eq!(first_two, [0, 1]);
}

#[test]
fn clips_longer_than_the_sample_budget_still_decode_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let clips = make_clips(&dir, 10);
    // Two long 44.1 kHz stereo clips, each far over the budget below.
    let mut paths: Vec<PathBuf> = clips.iter().map(|(p, _)| p.clone()).collect();
    for (at, frames) in [(3, 441_000), (7, 220_500)] {
        let path = dir.path().join(format!("long_{at}.wav"));
        let x = sine_interleaved(330.0, 44_100, frames, 2, 0.5);
        std::fs::write(&path, WavSpec::new(44_100, 2, Encoding::Pcm(16)).build(&x)).unwrap();
        paths.insert(at, path);
    }
    for samples in [0, 1_500, 5_000, u64::MAX] {
        let got: Vec<_> = load_many_bounded(paths.clone(), Lookahead { clips: 4, samples })
            .map(|(i, r)| (i, r.unwrap()))
            .collect();
        assert_eq!(got.len(), paths.len());
        for (i, clip) in got {
            assert_eq!(
                clip,
                audio_io::load(&paths[i]).unwrap(),
                "clip {i}, budget {samples}"
            );
        }
    }
    let long = audio_io::load(&paths[3]).unwrap();
    assert_eq!(long.len(), 160_000);
}

#[test]
fn bounded_errors_stay_in_their_slot() {
    let dir = tempfile::tempdir().unwrap();
    let clips = make_clips(&dir, 3);
    let paths = mixed_paths(&dir, &clips);
    for samples in [1, 3_000, audio_io::DEFAULT_LOOKAHEAD_SAMPLES] {
        let results: Vec<_> =
            load_many_bounded(paths.clone(), Lookahead { clips: 3, samples }).collect();
        assert_mixed_results(&results, &clips);
    }
}

#[test]
fn bounded_works_inside_a_single_thread_rayon_pool_and_stops_early() {
    let dir = tempfile::tempdir().unwrap();
    let clips = make_clips(&dir, 12);
    let paths: Vec<PathBuf> = clips.iter().map(|(p, _)| p.clone()).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let limit = Lookahead {
        clips: 4,
        samples: 4_000,
    };
    let lengths: Vec<u64> = pool.install(|| {
        load_many_bounded(paths.clone(), limit)
            .map(|(_, r)| r.unwrap().len() as u64)
            .collect()
    });
    assert_eq!(lengths, clips.iter().map(|(_, n)| *n).collect::<Vec<_>>());
    let first_two: Vec<usize> = load_many_bounded(paths, limit)
        .take(2)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(first_two, [0, 1]);
}
