//! Safetensors weights: one `model.safetensors` or shards listed by
//! `model.safetensors.index.json`, memory-mapped and validated (header, dtype, shape, bounds).
//! Tensors stay in their stored dtype (f32, bf16, f16) and are viewed in place when aligned.
//! The store remembers which tensors were opened, so a process holding only a share of a
//! model ([`LayerShare`](super::LayerShare)) prefaults and counts only those bytes.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::{Mutex, PoisonError};

use memmap2::Mmap;
use serde_json::Value;

use super::kernels::gemm;
use super::mmap::{self, MappedSlice};
use super::pod::Pod;
use crate::backend::{BackendError, DType};

/// The page size prefaulting steps by (a smaller real page size only leaves some pages to
/// fault at first use).
const PAGE: usize = 4096;

/// A header larger than this is refused as corrupt (real headers are a few MB at most).
const MAX_HEADER_BYTES: u64 = 256 << 20;

/// Elements of one tensor: a view into a mapped file, or an owned copy when the file's data is
/// not aligned for the element type.
pub enum Buf<T: Pod> {
    Mapped(MappedSlice<T>),
    Owned(Arc<Vec<T>>),
    /// An owned copy whose first element sits on a 64-byte boundary: `len` elements from
    /// index `skip` of the vector (see [`Matrix::tile_aligned`]).
    Aligned {
        data: Arc<Vec<T>>,
        skip: usize,
        len: usize,
    },
}

impl<T: Pod> Buf<T> {
    pub fn as_slice(&self) -> &[T] {
        match self {
            Buf::Mapped(m) => m.as_slice(),
            Buf::Owned(v) => v,
            Buf::Aligned { data, skip, len } => &data[*skip..*skip + *len],
        }
    }

    /// A copy of these elements starting on a 64-byte boundary.
    fn aligned_copy(&self) -> Self
    where
        T: Default,
    {
        let src = self.as_slice();
        let mut data = Vec::new();
        let start = {
            let dst = gemm::aligned64(&mut data, src.len());
            dst.copy_from_slice(src);
            dst.as_ptr() as usize
        };
        let skip = (start - data.as_ptr() as usize) / std::mem::size_of::<T>();
        Buf::Aligned {
            data: Arc::new(data),
            skip,
            len: src.len(),
        }
    }
}

impl<T: Pod> Clone for Buf<T> {
    fn clone(&self) -> Self {
        match self {
            Buf::Mapped(m) => Buf::Mapped(m.clone()),
            Buf::Owned(v) => Buf::Owned(Arc::clone(v)),
            Buf::Aligned { data, skip, len } => Buf::Aligned {
                data: Arc::clone(data),
                skip: *skip,
                len: *len,
            },
        }
    }
}

/// Tensor data in its stored format.
#[derive(Clone)]
pub enum WeightData {
    F32(Buf<f32>),
    Bf16(Buf<u16>),
    F16(Buf<u16>),
    /// bf16 rearranged for the AMX and AVX-512 kernels ([`Bf16Tiles`]), made at load by
    /// [`Matrix::amx_tiled`].
    Bf16Tiles(Bf16Tiles),
}

/// bf16 weights of a `rows × cols` matrix rearranged into AMX tile order, so the matmul
/// kernels read them front to back: blocks of [`TILE_ROWS`] rows (the last padded with zero
/// rows), each block its [`TILE_COLS`]-column steps in order (the last padded with zeros),
/// each step one 16 × 32 AMX tile (1 KiB, rows 64 bytes apart). A block is one sequential
/// stream; the AMX kernel reads two at a time, the AVX-512 kernels one. Element `(r, c)` sits
/// at `((r / 16) * steps + c / 32) * 512 + (r % 16) * 32 + c % 32`. The data starts on a
/// 64-byte boundary.
#[derive(Clone)]
pub struct Bf16Tiles {
    pub data: Buf<u16>,
    pub rows: usize,
    pub cols: usize,
}

/// Rows of one block of [`Bf16Tiles`] (one AMX tile's rows).
pub const TILE_ROWS: usize = 16;
/// Columns of one step of [`Bf16Tiles`] (one 64-byte tile row of bf16).
pub const TILE_COLS: usize = 32;
/// Elements of one step of one block of [`Bf16Tiles`].
pub const TILE_STEP: usize = TILE_ROWS * TILE_COLS;

/// Where row `r`'s values of column step `t` start in [`Bf16Tiles`] data of `steps` steps.
fn tile_offset(steps: usize, r: usize, t: usize) -> usize {
    ((r / TILE_ROWS) * steps + t) * TILE_STEP + (r % TILE_ROWS) * TILE_COLS
}

impl Bf16Tiles {
    /// Rearranges row-major `rows × cols` bf16 values.
    pub fn from_rows(src: &[u16], rows: usize, cols: usize) -> Self {
        assert_eq!(src.len(), rows * cols, "not a rows × cols matrix");
        let (blocks, steps) = (rows.div_ceil(TILE_ROWS), cols.div_ceil(TILE_COLS));
        let len = blocks * steps * TILE_STEP;
        // Zeroed (padding past `rows` and `cols` stays zero), with room for the 64-byte
        // alignment, on huge pages where the system gives them (`hugepages`).
        let room = gemm::aligned64_room::<u16>(len);
        let mut data = super::hugepages::zeroed_vec(room)
            .unwrap_or_else(|e| panic!("cannot allocate {} MiB of weights: {e}", (room * 2) >> 20));
        let start = {
            let dst = gemm::aligned64(&mut data, len);
            for (r, row) in src.chunks_exact(cols.max(1)).enumerate() {
                for (t, chunk) in row.chunks(TILE_COLS).enumerate() {
                    let at = tile_offset(steps, r, t);
                    dst[at..at + chunk.len()].copy_from_slice(chunk);
                }
            }
            dst.as_ptr() as usize
        };
        let skip = (start - data.as_ptr() as usize) / 2;
        Self {
            data: Buf::Aligned {
                data: Arc::new(data),
                skip,
                len,
            },
            rows,
            cols,
        }
    }

    /// Column steps per block (`cols / 32`, rounded up).
    pub fn steps(&self) -> usize {
        self.cols.div_ceil(TILE_COLS)
    }

    /// The blocks of rows `r0..r1` (`r0` a multiple of [`TILE_ROWS`]), contiguous.
    pub fn block_slice(&self, r0: usize, r1: usize) -> &[u16] {
        assert!(r0.is_multiple_of(TILE_ROWS) && r0 <= r1 && r1 <= self.rows);
        let per = self.steps() * TILE_STEP;
        &self.data.as_slice()[r0 / TILE_ROWS * per..r1.div_ceil(TILE_ROWS) * per]
    }

    /// Consecutive panels of `rows` rows (a multiple of [`TILE_ROWS`]; the last may be
    /// shorter), each its blocks' contiguous data.
    pub fn panels(&self, rows: usize) -> impl Iterator<Item = &[u16]> {
        (0..self.rows)
            .step_by(rows)
            .map(move |r0| self.block_slice(r0, (r0 + rows).min(self.rows)))
    }

    /// Row `r` in row-major order, into `out` (`cols` values).
    pub fn row_into(&self, r: usize, out: &mut [u16]) {
        let data = self.data.as_slice();
        for (t, chunk) in out[..self.cols].chunks_mut(TILE_COLS).enumerate() {
            let at = tile_offset(self.steps(), r, t);
            chunk.copy_from_slice(&data[at..at + chunk.len()]);
        }
    }

    /// The matrix in row-major order again, as a bf16 [`Matrix`].
    pub fn to_matrix(&self) -> Matrix {
        Matrix {
            rows: self.rows,
            cols: self.cols,
            data: WeightData::Bf16(Buf::Owned(Arc::new(self.to_rows()))),
        }
    }

    /// The matrix in row-major order again.
    pub fn to_rows(&self) -> Vec<u16> {
        let mut out = vec![0u16; self.rows * self.cols];
        for (r, row) in out.chunks_exact_mut(self.cols.max(1)).enumerate() {
            self.row_into(r, row);
        }
        out
    }
}

impl WeightData {
    pub fn dtype(&self) -> DType {
        match self {
            WeightData::F32(_) => DType::F32,
            WeightData::Bf16(_) => DType::BF16,
            WeightData::F16(_) => DType::F16,
            WeightData::Bf16Tiles(_) => DType::BF16,
        }
    }

    /// Row-major data: itself, or for [`Bf16Tiles`] a row-major copy (for the rare readers
    /// that are not matmul kernels).
    pub fn row_major(&self) -> std::borrow::Cow<'_, WeightData> {
        match self {
            WeightData::Bf16Tiles(t) => std::borrow::Cow::Owned(t.to_matrix().data),
            other => std::borrow::Cow::Borrowed(other),
        }
    }

    /// The elements widened to f32 (for small tensors: norms, biases).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match self {
            WeightData::F32(b) => b.as_slice().to_vec(),
            WeightData::Bf16(b) => b
                .as_slice()
                .iter()
                .map(|&x| super::kernels::bf16_to_f32(x))
                .collect(),
            WeightData::F16(b) => b
                .as_slice()
                .iter()
                .map(|&x| super::kernels::f16_to_f32(x))
                .collect(),
            WeightData::Bf16Tiles(_) => self.row_major().to_f32_vec(),
        }
    }
}

/// A 2-D weight `[rows, cols]` (HF Linear: `[out_features, in_features]`).
#[derive(Clone)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: WeightData,
}

impl Matrix {
    /// This matrix with bf16 data starting on a 64-byte boundary, as the AMX tile loads want
    /// (a tile row straddling two cache lines loads several times slower): itself when the
    /// data already is (or is not bf16), else an owned, aligned copy. Safetensors data is only
    /// 8-byte aligned, so most mapped files need the copy. Returns the bytes copied.
    pub fn tile_aligned(self) -> (Self, usize) {
        match &self.data {
            WeightData::Bf16(b) if !(b.as_slice().as_ptr() as usize).is_multiple_of(64) => {
                let copy = b.aligned_copy();
                let bytes = copy.as_slice().len() * 2;
                (self.with(WeightData::Bf16(copy)), bytes)
            }
            _ => (self, 0),
        }
    }

    /// This matrix with bf16 data in AMX tile order ([`Bf16Tiles`]), which the AMX kernel
    /// streams from memory front to back (row-major rows give it 32 interleaved streams that
    /// the hardware prefetcher follows poorly); other dtypes unchanged. Returns the bytes
    /// copied.
    pub fn amx_tiled(self) -> (Self, usize) {
        match &self.data {
            WeightData::Bf16(b) => {
                let t = Bf16Tiles::from_rows(b.as_slice(), self.rows, self.cols);
                let bytes = t.data.as_slice().len() * 2;
                (self.with(WeightData::Bf16Tiles(t)), bytes)
            }
            _ => (self, 0),
        }
    }

    /// The same shape with other data.
    fn with(&self, data: WeightData) -> Self {
        Matrix {
            rows: self.rows,
            cols: self.cols,
            data,
        }
    }
}

/// The gate and up projections of a gated MLP (`rows × cols` bf16 each) as one weight of
/// `2 × rows` rows in AMX tile order, their rows interleaved in blocks of `block`: gate rows
/// `0..block`, up rows `0..block`, gate rows `block..2 block`, … (`linear::matmul_glu`
/// applies the activation to each pair of blocks). `None` unless both are row-major bf16 of
/// that shape, with columns, and `rows` is a multiple of `block`.
pub fn glu_interleaved(gate: &Matrix, up: &Matrix, block: usize) -> Option<Matrix> {
    let (rows, cols) = (gate.rows, gate.cols);
    let (WeightData::Bf16(g), WeightData::Bf16(u)) = (&gate.data, &up.data) else {
        return None;
    };
    if (up.rows, up.cols) != (rows, cols) || block == 0 || cols == 0 || !rows.is_multiple_of(block)
    {
        return None;
    }
    let (g, u) = (g.as_slice(), u.as_slice());
    let mut both = Vec::with_capacity(2 * rows * cols);
    for (gb, ub) in g
        .chunks_exact(block * cols)
        .zip(u.chunks_exact(block * cols))
    {
        both.extend_from_slice(gb);
        both.extend_from_slice(ub);
    }
    Some(Matrix {
        rows: 2 * rows,
        cols,
        data: WeightData::Bf16Tiles(Bf16Tiles::from_rows(&both, 2 * rows, cols)),
    })
}

/// Builds tensor data from (map, byte offset, element count).
type MakeData = fn(Arc<Mmap>, usize, usize) -> WeightData;

struct Entry {
    file: usize,
    dtype: String,
    shape: Vec<usize>,
    /// Absolute byte range in the file.
    start: usize,
    end: usize,
}

/// All tensors of a model folder, indexed by name.
pub struct WeightStore {
    files: Vec<(PathBuf, Arc<Mmap>)>,
    entries: HashMap<String, Entry>,
    /// Names of the tensors handed out by [`WeightStore::tensor`] (the held ones).
    opened: Mutex<BTreeSet<String>>,
}

fn corrupt(path: &Path, msg: impl std::fmt::Display) -> BackendError {
    BackendError::Weights(format!("{}: {msg}", path.display()))
}

impl WeightStore {
    /// Opens `model.safetensors`, or the shards named by `model.safetensors.index.json`.
    pub fn open(model_dir: &Path) -> Result<Self, BackendError> {
        let single = model_dir.join("model.safetensors");
        let index = model_dir.join("model.safetensors.index.json");
        let names: Vec<String> = if single.is_file() {
            vec!["model.safetensors".to_string()]
        } else if index.is_file() {
            shard_names(&index)?
        } else {
            return Err(BackendError::Weights(format!(
                "{}: neither model.safetensors nor model.safetensors.index.json found",
                model_dir.display()
            )));
        };
        let mut store = Self {
            files: Vec::new(),
            entries: HashMap::new(),
            opened: Mutex::new(BTreeSet::new()),
        };
        for (i, name) in names.iter().enumerate() {
            let path = model_dir.join(name);
            let file = File::open(&path).map_err(|e| BackendError::Io {
                path: path.clone(),
                source: e,
            })?;
            let map = mmap::map_file(&file).map_err(|e| BackendError::Io {
                path: path.clone(),
                source: e,
            })?;
            tracing::info!(
                shard = i + 1,
                shards = names.len(),
                file = %path.display(),
                mib = map.len() >> 20,
                "mapped weights"
            );
            store.index_file(i, &path, &map)?;
            store.files.push((path, Arc::new(map)));
        }
        Ok(store)
    }

    fn index_file(&mut self, file: usize, path: &Path, map: &[u8]) -> Result<(), BackendError> {
        let len_bytes: [u8; 8] = map
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| corrupt(path, "shorter than a safetensors header"))?;
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > MAX_HEADER_BYTES || header_len > (map.len() as u64).saturating_sub(8) {
            return Err(corrupt(path, "header length out of range"));
        }
        let data_start = 8 + header_len as usize;
        let header: Value = serde_json::from_slice(&map[8..data_start])
            .map_err(|e| corrupt(path, format!("invalid header JSON: {e}")))?;
        let obj = header
            .as_object()
            .ok_or_else(|| corrupt(path, "header is not an object"))?;
        for (name, t) in obj {
            if name == "__metadata__" {
                continue;
            }
            let dtype = t
                .get("dtype")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let shape: Option<Vec<usize>> =
                t.get("shape").and_then(Value::as_array).and_then(|a| {
                    a.iter()
                        .map(|d| d.as_u64().and_then(|n| usize::try_from(n).ok()))
                        .collect()
                });
            let offs: Option<Vec<usize>> = t
                .get("data_offsets")
                .and_then(Value::as_array)
                .and_then(|a| {
                    a.iter()
                        .map(|d| d.as_u64().and_then(|n| usize::try_from(n).ok()))
                        .collect()
                });
            let (Some(shape), Some(offs)) = (shape, offs) else {
                return Err(corrupt(
                    path,
                    format!("tensor `{name}`: bad shape or data_offsets"),
                ));
            };
            let [begin, end] = offs[..] else {
                return Err(corrupt(path, format!("tensor `{name}`: bad data_offsets")));
            };
            let start = data_start.checked_add(begin);
            let stop = data_start.checked_add(end);
            let (Some(start), Some(stop)) = (start, stop) else {
                return Err(corrupt(path, format!("tensor `{name}`: offsets overflow")));
            };
            if begin > end || stop > map.len() {
                return Err(corrupt(
                    path,
                    format!("tensor `{name}`: data outside the file"),
                ));
            }
            let entry = Entry {
                file,
                dtype,
                shape,
                start,
                end: stop,
            };
            self.entries.insert(name.clone(), entry);
        }
        Ok(())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Total bytes of mapped weight files.
    pub fn mapped_bytes(&self) -> usize {
        self.files.iter().map(|(_, m)| m.len()).sum()
    }

    /// Names of the tensors opened so far, sorted.
    pub fn opened(&self) -> Vec<String> {
        self.opened_set().iter().cloned().collect()
    }

    /// Stored bytes of the tensors opened so far (each counted once, however often opened).
    pub fn opened_bytes(&self) -> u64 {
        self.opened_set()
            .iter()
            .filter_map(|n| self.entries.get(n))
            .map(|e| (e.end - e.start) as u64)
            .sum()
    }

    fn opened_set(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        // A poisoned lock only means a panic while inserting a name; the set is still valid.
        self.opened.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads one byte per page of every tensor opened so far (the held ones, not the whole
    /// files) so the first steps do not page-fault, logging progress for large models.
    pub fn prefault(&self) {
        let names = self.opened();
        let total = self.opened_bytes().max(1);
        let mut done = 0u64;
        let mut next_report = total / 10;
        let mut sink = 0u8;
        for name in &names {
            let Some(e) = self.entries.get(name) else {
                continue;
            };
            let (path, map) = &self.files[e.file];
            // One byte in each page the tensor touches: its first byte, then every page start.
            let first_page_end = (e.start / PAGE + 1) * PAGE;
            sink ^= map[e.start..e.end].first().copied().unwrap_or(0);
            if first_page_end < e.end {
                sink ^= map[first_page_end..e.end]
                    .iter()
                    .step_by(PAGE)
                    .fold(0u8, |a, &b| a ^ b);
            }
            done += (e.end - e.start) as u64;
            if total > (256 << 20) && done >= next_report {
                tracing::info!(
                    file = %path.display(),
                    percent = done * 100 / total,
                    "loading weights"
                );
                next_report += total / 10;
            }
        }
        std::hint::black_box(sink);
    }

    /// A tensor with exactly `shape`, in its stored dtype.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<WeightData, BackendError> {
        let e = self
            .entries
            .get(name)
            .ok_or_else(|| BackendError::Weights(format!("missing tensor `{name}`")))?;
        let (path, map) = &self.files[e.file];
        if e.shape != shape {
            return Err(corrupt(
                path,
                format!(
                    "tensor `{name}` has shape {:?}, expected {shape:?}",
                    e.shape
                ),
            ));
        }
        let numel: usize = shape.iter().product();
        let (elem, make): (usize, MakeData) = match e.dtype.as_str() {
            "F32" => (4, |m, o, n| {
                WeightData::F32(view(m, o, n, f32::from_le_bytes))
            }),
            "BF16" => (2, |m, o, n| {
                WeightData::Bf16(view(m, o, n, u16::from_le_bytes))
            }),
            "F16" => (2, |m, o, n| {
                WeightData::F16(view(m, o, n, u16::from_le_bytes))
            }),
            other => {
                return Err(BackendError::Unsupported(format!(
                    "tensor `{name}` has dtype {other} (supported: F32, BF16, F16)"
                )))
            }
        };
        if numel.checked_mul(elem) != Some(e.end - e.start) {
            return Err(corrupt(
                path,
                format!("tensor `{name}`: byte size does not match shape"),
            ));
        }
        self.opened_set().insert(name.to_string());
        Ok(make(Arc::clone(map), e.start, numel))
    }

    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix, BackendError> {
        Ok(Matrix {
            rows,
            cols,
            data: self.tensor(name, &[rows, cols])?,
        })
    }

    /// A 1-D tensor widened to f32.
    pub fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, BackendError> {
        Ok(self.tensor(name, &[len])?.to_f32_vec())
    }
}

/// A mapped view, or an owned little-endian decode when the data is misaligned.
fn view<T: Pod, const N: usize>(
    map: Arc<Mmap>,
    offset: usize,
    len: usize,
    decode: fn([u8; N]) -> T,
) -> Buf<T> {
    if let Some(v) = MappedSlice::new(Arc::clone(&map), offset, len) {
        return Buf::Mapped(v);
    }
    let bytes = &map[offset..offset + len * N];
    let owned = bytes
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            decode(a)
        })
        .collect();
    Buf::Owned(Arc::new(owned))
}

/// Shard file names from an index, each a plain file name inside the model folder.
fn shard_names(index: &Path) -> Result<Vec<String>, BackendError> {
    let text = std::fs::read_to_string(index).map_err(|e| BackendError::Io {
        path: index.to_path_buf(),
        source: e,
    })?;
    let v: Value = serde_json::from_str(&text).map_err(|e| corrupt(index, e))?;
    let map = v
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| corrupt(index, "missing `weight_map`"))?;
    let mut names = BTreeSet::new();
    for file in map.values() {
        let f = file
            .as_str()
            .ok_or_else(|| corrupt(index, "weight_map values must be strings"))?;
        let plain = Path::new(f).file_name().and_then(|n| n.to_str()) == Some(f);
        if !plain || f == ".." {
            return Err(corrupt(
                index,
                format!("shard `{f}` is not a plain file name"),
            ));
        }
        names.insert(f.to_string());
    }
    if names.is_empty() {
        return Err(corrupt(index, "no shards listed"));
    }
    Ok(names.into_iter().collect())
}

#[cfg(test)]
mod align_tests {
    use super::*;

    fn bf16(m: &Matrix) -> &[u16] {
        match &m.data {
            WeightData::Bf16(b) => b.as_slice(),
            _ => panic!("bf16"),
        }
    }

    /// The tile order puts element `(r, c)` where `Bf16Tiles` says, pads with zeros, starts
    /// on a 64-byte boundary, and gives rows and blocks back unchanged.
    #[test]
    fn tile_order_places_every_element() {
        let (rows, cols) = (37, 70);
        let src: Vec<u16> = (0..rows * cols).map(|i| i as u16 + 1).collect();
        let t = Bf16Tiles::from_rows(&src, rows, cols);
        let data = t.data.as_slice();
        assert!((data.as_ptr() as usize).is_multiple_of(64));
        let steps = cols.div_ceil(32);
        assert_eq!(t.steps(), steps);
        assert_eq!(data.len(), rows.div_ceil(16) * steps * 512);
        for r in 0..rows.div_ceil(16) * 16 {
            for c in 0..steps * 32 {
                let at = ((r / 16) * steps + c / 32) * 512 + (r % 16) * 32 + c % 32;
                let want = if r < rows && c < cols {
                    src[r * cols + c]
                } else {
                    0
                };
                assert_eq!(data[at], want, "({r}, {c})");
            }
        }
        assert_eq!(t.to_rows(), src);
        let mut row = vec![0u16; cols];
        t.row_into(20, &mut row);
        assert_eq!(row, src[20 * cols..21 * cols]);
        assert_eq!(t.block_slice(16, 37).len(), 2 * steps * 512);
        assert_eq!(t.block_slice(0, 16).len(), steps * 512);
        let m = Matrix {
            rows,
            cols,
            data: WeightData::Bf16(Buf::Owned(Arc::new(src.clone()))),
        };
        let (tiled, _) = m.amx_tiled();
        assert_eq!(tiled.data.dtype(), DType::BF16);
        assert_eq!(tiled.data.to_f32_vec().len(), rows * cols);
        match &*tiled.data.row_major() {
            WeightData::Bf16(b) => assert_eq!(b.as_slice(), &src[..]),
            _ => panic!("row-major bf16 expected"),
        }
    }

    #[test]
    fn tile_aligned_copies_only_misaligned_bf16() {
        let want: Vec<u16> = (0..999u16).collect();
        // A view 2 or 4 bytes past a 64-byte boundary (one of the two is misaligned).
        let mut v: Vec<u16> = [0, 0].into_iter().chain(want.iter().copied()).collect();
        let mut skip = 2;
        if (v.as_ptr() as usize + 4).is_multiple_of(64) {
            v.remove(0); // in place: same allocation
            skip = 1;
        }
        let shifted = Buf::Aligned {
            data: Arc::new(v),
            skip,
            len: want.len(),
        };
        let mis = Matrix {
            rows: 9,
            cols: 111,
            data: WeightData::Bf16(shifted),
        };
        assert_eq!(bf16(&mis), &want[..]);
        assert!(!(bf16(&mis).as_ptr() as usize).is_multiple_of(64));
        let (fixed, copied) = mis.tile_aligned();
        assert_eq!(copied, want.len() * 2);
        assert_eq!(bf16(&fixed), &want[..]);
        assert!((bf16(&fixed).as_ptr() as usize).is_multiple_of(64));
        // Already aligned: kept, nothing copied.
        let (same, copied) = fixed.tile_aligned();
        assert_eq!(copied, 0);
        assert_eq!(bf16(&same), &want[..]);
    }
}
