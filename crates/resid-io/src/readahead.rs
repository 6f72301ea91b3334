//! Read-ahead: a thread that asks the kernel (`MADV_WILLNEED`) to load the
//! tensors the workers will read next, a bounded number of bytes ahead of
//! them. Without it a worker stalls on page faults while the other core
//! idles; with it the disk reads while both cores compute. The pages go to
//! the page cache, not into this process's resident set.

use std::sync::{Condvar, Mutex};

use crate::checkpoint::{Checkpoint, TensorEntry};

/// Default lookahead: enough to hold the next few tensors of a 70B model
/// (an embedding side is up to ~1 GB there) without crowding the page cache.
pub const DEFAULT_AHEAD: usize = 1 << 30;

/// Piece advised at once, so the lookahead bound and `stop` act promptly.
const PIECE: usize = 16 << 20;

/// One tensor to load, tagged with the position (job, batch) that reads it.
pub struct Ahead<'a> {
    pub pos: usize,
    pub ck: &'a Checkpoint,
    pub tensor: &'a TensorEntry,
}

/// Shared between the consumer, which reports how far it has got, and the
/// thread running [`ReadAhead::run`].
#[derive(Default)]
pub struct ReadAhead {
    /// (first position not yet started by the consumer, stopped).
    state: Mutex<(usize, bool)>,
    cv: Condvar,
}

impl ReadAhead {
    pub fn new() -> ReadAhead {
        ReadAhead::default()
    }

    /// Advises `items` (sorted by `pos`) in order, never more than `ahead`
    /// bytes past the consumer's position; returns when done or stopped.
    pub fn run(&self, items: &[Ahead], ahead: usize) {
        self.run_with(items, ahead, |it, off, n| {
            it.ck.will_need(it.tensor, off, n)
        });
    }

    /// [`run`](Self::run) with the advice given by `advise(item, offset, len)`.
    fn run_with(
        &self,
        items: &[Ahead],
        ahead: usize,
        mut advise: impl FnMut(&Ahead, usize, usize),
    ) {
        // Bytes of the items whose position the consumer has not reached.
        let mut window: std::collections::VecDeque<(usize, usize)> = Default::default();
        let mut in_window = 0usize;
        for it in items {
            let len = it.tensor.end - it.tensor.start;
            {
                let mut st = self.state.lock().expect("readahead");
                loop {
                    if st.1 {
                        return;
                    }
                    while window.front().is_some_and(|&(p, _)| p < st.0) {
                        in_window -= window.pop_front().expect("front").1;
                    }
                    if it.pos <= st.0 || in_window + len <= ahead {
                        break;
                    }
                    st = self.cv.wait(st).expect("readahead");
                }
            }
            window.push_back((it.pos, len));
            in_window += len;
            let mut off = 0;
            while off < len {
                if self.state.lock().expect("readahead").1 {
                    return;
                }
                let n = PIECE.min(len - off);
                advise(it, off, n);
                off += n;
            }
        }
    }

    /// The consumer is starting position `pos` (everything before it is read).
    pub fn reached(&self, pos: usize) {
        let mut st = self.state.lock().expect("readahead");
        if pos > st.0 {
            st.0 = pos;
            self.cv.notify_all();
        }
    }

    /// Ends [`run`](Self::run) early (the consumer is done or failed).
    pub fn stop(&self) {
        self.state.lock().expect("readahead").1 = true;
        self.cv.notify_all();
    }
}

/// Runs `work` with a read-ahead thread over `items`; `work` reports its
/// position through the [`ReadAhead`] it is given. The thread is stopped
/// when `work` returns.
pub fn with_readahead<R>(items: &[Ahead], ahead: usize, work: impl FnOnce(&ReadAhead) -> R) -> R {
    let ra = ReadAhead::new();
    std::thread::scope(|s| {
        s.spawn(|| ra.run(items, ahead));
        let r = work(&ra);
        ra.stop();
        r
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(dir: &std::path::Path, n: usize) -> Checkpoint {
        let p = dir.join("m.safetensors");
        let specs: Vec<_> = (0..n)
            .map(|i| crate::write::TensorSpec {
                name: format!("t{i}"),
                dtype_name: "F32".into(),
                shape: vec![1024],
            })
            .collect();
        let mut w =
            crate::write::SafetensorsWriter::create(&p, specs, &Default::default()).unwrap();
        for i in 0..n {
            w.write_tensor(&format!("t{i}"), &[0u8; 4096]).unwrap();
        }
        w.finish().unwrap();
        Checkpoint::open(&p).unwrap()
    }

    /// Every tensor, its position its index.
    fn in_order(ck: &Checkpoint) -> Vec<Ahead<'_>> {
        ck.tensors()
            .iter()
            .enumerate()
            .map(|(pos, tensor)| Ahead { pos, ck, tensor })
            .collect()
    }

    #[test]
    fn never_runs_more_than_the_window_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let ck = checkpoint(dir.path(), 12);
        let items = in_order(&ck);
        let ra = ReadAhead::new();
        let advised = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            s.spawn(|| {
                ra.run_with(&items, 3 * 4096, |it, _, _| {
                    let at = ra.state.lock().unwrap().0;
                    advised.lock().unwrap().push((it.pos, at));
                })
            });
            for pos in 0..=items.len() {
                std::thread::sleep(std::time::Duration::from_millis(5));
                ra.reached(pos);
            }
        });
        let advised = advised.into_inner().unwrap();
        // Every tensor once, in order, and never more than 3 past the consumer.
        assert_eq!(
            advised.iter().map(|a| a.0).collect::<Vec<_>>(),
            (0..12).collect::<Vec<_>>()
        );
        for &(pos, at) in &advised {
            assert!(pos < at + 3, "advised {pos} with the consumer at {at}");
        }
    }

    #[test]
    fn stop_ends_a_waiting_thread() {
        let dir = tempfile::tempdir().unwrap();
        let ck = checkpoint(dir.path(), 6);
        let items = in_order(&ck);
        // The window holds one tensor and the consumer never moves: without
        // the stop, the scope would never end.
        let r = with_readahead(&items, 4096, |_| 7);
        assert_eq!(r, 7);
    }
}
