//! The input format shared by the RPC fuzz targets (and by `fuzz/rpc_frames.py` on the Python side):
//! a sequence of frames, each a one-byte length `L` followed by `L` bytes (the last frame is cut
//! short when the input ends early), at most `MAX_FRAMES` frames.

pub const MAX_FRAMES: usize = 64;

pub fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        if frames.len() == MAX_FRAMES {
            break;
        }
        let n = usize::from(len).min(tail.len());
        frames.push(&tail[..n]);
        rest = &tail[n..];
    }
    frames
}
