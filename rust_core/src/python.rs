//! The thin PyO3 layer over [`crate::engine::Engine`]; `clipper/rust_core.pyi` documents it. It also
//! completes the C interface ([`crate::capi`]) with `submit_simple`, the one C function that needs the
//! engine object, and exports the table in a capsule.

use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::aimd::AimdConfig;
use crate::capi::{self, CApi};
use crate::engine::{self, Completion, EngineConfig, ModelSettings, Status};
use crate::rpc::{self, InputType, Request};
use crate::stats::Summary;

#[pyclass(frozen, module = "clipper.rust_core")]
struct Engine {
    inner: crate::engine::Engine,
}

fn input_type(code: u8) -> PyResult<InputType> {
    InputType::from_code(u32::from(code)).ok_or_else(|| PyValueError::new_err(format!("unknown input type code {code}")))
}

/// Completions as Python sees them: a list of `(token, status, payload)`.
fn completion_list<'py>(py: Python<'py>, done: &[Completion]) -> PyResult<Bound<'py, PyList>> {
    let items = done.iter().map(|c| {
        let payload = PyBytes::new(py, &c.payload);
        PyTuple::new(py, [c.token.into_pyobject(py)?.into_any(), (c.status as u8).into_pyobject(py)?.into_any(), payload.into_any()])
    });
    PyList::new(py, items.collect::<PyResult<Vec<_>>>()?)
}

fn summary<'py>(py: Python<'py>, s: Summary) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("count", s.count)?;
    d.set_item("min", s.min)?;
    d.set_item("max", s.max)?;
    d.set_item("mean", s.mean)?;
    d.set_item("std_dev", s.std_dev)?;
    d.set_item("p50", s.p50)?;
    d.set_item("p95", s.p95)?;
    d.set_item("p99", s.p99)?;
    Ok(d)
}

#[pymethods]
impl Engine {
    #[new]
    #[pyo3(signature = (
        rpc_address=engine::DEFAULT_RPC_ADDRESS,
        cache_bytes=engine::DEFAULT_CACHE_BYTES,
        heartbeat_timeout=engine::DEFAULT_HEARTBEAT_TIMEOUT.as_secs_f64(),
        aimd_target=AimdConfig::default().target,
        max_batch_size=AimdConfig::default().max_batch_size,
        max_queue=engine::DEFAULT_MAX_QUEUE,
        ping_interval=engine::DEFAULT_PING_INTERVAL.as_secs_f64(),
        ping_timeout=engine::DEFAULT_PING_TIMEOUT.as_secs_f64(),
        spin=true,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        rpc_address: &str,
        cache_bytes: usize,
        heartbeat_timeout: f64,
        aimd_target: f64,
        max_batch_size: usize,
        max_queue: usize,
        ping_interval: f64,
        ping_timeout: f64,
        spin: bool,
    ) -> PyResult<Self> {
        let valid = heartbeat_timeout > 0.0 && aimd_target > 0.0 && aimd_target <= 1.0 && max_batch_size > 0 && max_queue > 0;
        if !valid {
            return Err(PyValueError::new_err(
                "heartbeat_timeout must be positive, aimd_target in (0, 1], max_batch_size and max_queue at least 1",
            ));
        }
        let seconds = |s: f64| Duration::try_from_secs_f64(s).ok().filter(|d| *d <= Duration::from_secs(86_400));
        let (Some(ping_interval), Some(ping_timeout)) = (seconds(ping_interval), seconds(ping_timeout)) else {
            return Err(PyValueError::new_err("ping_interval and ping_timeout must be between 0 (off) and 86400 s"));
        };
        let config = EngineConfig {
            rpc_address: rpc_address.into(),
            cache_bytes,
            heartbeat_timeout: Duration::from_secs_f64(heartbeat_timeout),
            ping_interval,
            ping_timeout,
            aimd: AimdConfig { target: aimd_target, max_batch_size, ..AimdConfig::default() },
            max_queue,
            spin,
            ..EngineConfig::default()
        };
        let inner = crate::engine::Engine::start(config).map_err(|e| PyOSError::new_err(e.to_string()))?;
        Ok(Engine { inner })
    }

    #[getter]
    fn rpc_endpoint(&self) -> &str {
        self.inner.rpc_endpoint()
    }

    fn model(&self, name: &str, version: &str) -> u32 {
        self.inner.model(name, version)
    }

    #[pyo3(signature = (model, batch_size=-1, batch_wait_micros=0))]
    fn configure_model(&self, model: u32, batch_size: i64, batch_wait_micros: u64) -> PyResult<()> {
        let batch_size = match batch_size {
            -1 => None,
            n if n > 0 => Some(n as usize),
            _ => return Err(PyValueError::new_err("batch_size must be positive or -1 (adaptive)")),
        };
        let batch_wait = Duration::from_micros(batch_wait_micros);
        self.inner.configure_model(model, ModelSettings { batch_size, batch_wait });
        Ok(())
    }

    fn submit<'py>(
        &self,
        py: Python<'py>,
        token: u64,
        model: u32,
        input_type_code: u8,
        data: &[u8],
        slo_micros: u64,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let hit = self.inner.submit(token, model, input_type(input_type_code)?, data, Duration::from_micros(slo_micros));
        Ok(hit.map(|output| PyBytes::new(py, &output)))
    }

    fn cancel(&self, tokens: Vec<u64>) {
        self.inner.cancel(tokens);
    }

    fn wake(&self) -> bool {
        self.inner.wake()
    }

    fn answer_fd(&self) -> i32 {
        self.inner.answer_fd()
    }

    fn read_answers<'py>(&self, py: Python<'py>) -> PyResult<(bool, Bound<'py, PyList>)> {
        let mut done: Vec<Completion> = Vec::new();
        let reading = self.inner.read_answers(&mut done);
        Ok((reading, completion_list(py, &done)?))
    }

    fn completion_fd(&self) -> i32 {
        self.inner.completion_fd()
    }

    fn drain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut done: Vec<Completion> = Vec::new();
        self.inner.drain(&mut done);
        completion_list(py, &done)
    }

    fn model_name(&self, model: u32) -> Option<(String, String)> {
        self.inner.model_name(model)
    }

    /// (model id, replica id, input type code) for every connected replica.
    fn replicas(&self) -> Vec<(u32, u32, u8)> {
        self.inner.replicas().into_iter().map(|r| (r.model, r.replica_id, r.input_type as u8)).collect()
    }

    fn cache_counts(&self) -> (u64, u64) {
        self.inner.cache_counts()
    }

    /// Per model id: counters and summaries of recent batch sizes and batch latencies.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        self.inner
            .stats()
            .into_iter()
            .map(|s| {
                let d = PyDict::new(py);
                d.set_item("predictions", s.predictions)?;
                d.set_item("batches", s.batches)?;
                d.set_item("queued", s.queued)?;
                d.set_item("replicas", s.replicas)?;
                d.set_item("batch_size", summary(py, s.batch_sizes.summary())?)?;
                d.set_item("latency_micros", summary(py, s.latencies_us.summary())?)?;
                Ok(d)
            })
            .collect()
    }

    fn close(&self, py: Python<'_>) {
        py.allow_threads(|| self.inner.shutdown());
    }
}

/// A ZeroMQ DEALER connection to one frontend, spoken by the calling thread (`crate::dealer`).
#[pyclass(frozen, module = "clipper.rust_core")]
struct Dealer {
    inner: crate::dealer::KeptDealer,
}

fn seconds(value: f64, what: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| PyValueError::new_err(format!("{what} must be a number of seconds >= 0")))
}

#[pymethods]
impl Dealer {
    #[new]
    fn new(endpoint: &str) -> PyResult<Self> {
        let inner = crate::dealer::KeptDealer::new(endpoint).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidInput => PyValueError::new_err(e.to_string()),
            _ => PyOSError::new_err(e.to_string()),
        })?;
        Ok(Dealer { inner })
    }

    #[getter]
    fn connected(&self) -> bool {
        self.inner.lock().is_connected()
    }

    fn send(&self, frames: &Bound<'_, PyList>) -> PyResult<()> {
        let frames: Vec<Bound<'_, PyBytes>> = frames.iter().map(|f| f.downcast_into::<PyBytes>()).collect::<Result<_, _>>()?;
        self.inner.lock().send(frames.iter().map(|f| f.as_bytes()));
        Ok(())
    }

    #[pyo3(signature = (timeout, spin=0.0))]
    fn recv<'py>(&self, py: Python<'py>, timeout: f64, spin: f64) -> PyResult<Option<Bound<'py, PyList>>> {
        let dealer = self.wait(py, timeout, spin)?;
        let message = match dealer.as_ref().and_then(|d| d.message()) {
            Some(frames) if frames.len() > 0 => Some(PyList::new(py, frames.map(|f| PyBytes::new(py, f)))?),
            _ => None,
        };
        Ok(message)
    }

    #[pyo3(signature = (timeout, spin=0.0))]
    fn recv_request<'py>(&self, py: Python<'py>, timeout: f64, spin: f64) -> PyResult<Option<Bound<'py, PyAny>>> {
        let dealer = self.wait(py, timeout, spin)?;
        let Some(frames) = dealer.as_ref().and_then(|d| d.message()) else { return Ok(None) };
        let frames: Vec<&[u8]> = frames.collect();
        if frames.is_empty() {
            return Ok(None);
        }
        match batch(py, &frames)? {
            Some(batch) => Ok(Some(batch.into_any())),
            None => Ok(Some(PyList::new(py, frames.iter().map(|f| PyBytes::new(py, f)))?.into_any())),
        }
    }

    fn send_prediction(&self, msg_id: u32, outputs: &Bound<'_, PyAny>) -> PyResult<()> {
        with_prediction_frames(msg_id, outputs, |frames| self.inner.lock().send(frames.into_iter()))
    }

    fn close(&self) {
        self.inner.lock().close();
    }
}

/// The batch a frontend message holds, as `Dealer.recv_request` hands it over; None for any other message
/// (or one that breaks the protocol).
fn batch<'py>(py: Python<'py>, frames: &[&[u8]]) -> PyResult<Option<Bound<'py, PyTuple>>> {
    let Ok(Request::Predict { msg_id, input_type, inputs }) = rpc::decode_request(frames) else { return Ok(None) };
    let (data, sizes) = if input_type == u64::from(InputType::Strings.code()) {
        let texts = inputs.iter().map(|i| PyString::new(py, &String::from_utf8_lossy(i)));
        (PyList::new(py, texts)?.into_any(), py.None().into_bound(py))
    } else {
        let joined = PyByteArray::new_with(py, inputs.iter().map(|i| i.len()).sum(), |buffer| {
            let mut at = 0;
            for input in &inputs {
                buffer[at..at + input.len()].copy_from_slice(input);
                at += input.len();
            }
            Ok(())
        })?;
        (joined.into_any(), PyList::new(py, inputs.iter().map(|i| i.len()))?.into_any())
    };
    Ok(Some((msg_id, input_type, data, sizes).into_pyobject(py)?))
}

/// The frames of the answer to batch `msg_id`, handed to `write`: each output as the UTF-8 of itself if a
/// `str`, else of its `str()` (an error, and nothing written, when one has no UTF-8: a lone surrogate).
fn with_prediction_frames<R>(msg_id: u32, outputs: &Bound<'_, PyAny>, write: impl FnOnce(Vec<&[u8]>) -> R) -> PyResult<R> {
    let texts = outputs
        .try_iter()?
        .map(|o| match o?.downcast_into::<PyString>() {
            Ok(text) => Ok(text),
            Err(e) => e.into_inner().str(),
        })
        .collect::<PyResult<Vec<_>>>()?;
    let outputs = texts.iter().map(|t| t.to_str().map(str::as_bytes)).collect::<PyResult<Vec<&[u8]>>>()?;
    let head = rpc::predict_response_head(msg_id, &outputs);
    Ok(write(head.iter().map(Vec::as_slice).chain(outputs.iter().copied()).collect()))
}

/// `Dealer.recv_request`'s decoding alone: the batch `frames` hold, or None.
#[pyfunction]
fn decode_batch<'py>(py: Python<'py>, frames: Vec<Vec<u8>>) -> PyResult<Option<Bound<'py, PyTuple>>> {
    batch(py, &frames.iter().map(Vec::as_slice).collect::<Vec<_>>())
}

/// `Dealer.send_prediction`'s encoding alone: the frames of the answer.
#[pyfunction]
fn encode_prediction<'py>(py: Python<'py>, msg_id: u32, outputs: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
    with_prediction_frames(msg_id, outputs, |frames| PyList::new(py, frames.into_iter().map(|f| PyBytes::new(py, f))))?
}

impl Dealer {
    /// Waits for a message without the GIL: the connection, holding it, when one came.
    fn wait(&self, py: Python<'_>, timeout: f64, spin: f64) -> PyResult<Option<parking_lot::MutexGuard<'_, crate::dealer::Dealer>>> {
        let (timeout, spin) = (seconds(timeout, "timeout")?, seconds(spin, "spin")?);
        let found = py
            .allow_threads(|| self.inner.lock().wait(timeout, spin))
            .map_err(|e| pyo3::exceptions::PyConnectionError::new_err(e.to_string()))?;
        // The message stays until the next wait; the keeper thread only drops it with the connection.
        Ok(found.then(|| self.inner.lock()))
    }
}

/// The capsule name `_core` asks for.
const C_API_NAME: &std::ffi::CStr = c"clipper.rust_core.c_api";

/// The C functions the Cython protocol calls (rust_core/include/clipper_capi.h), exported in the
/// capsule `c_api`.
static C_API: CApi = CApi::new(submit_simple);

/// `submit_simple` of the C API: submits the input of a predict body that is exactly
/// `{"input": [numbers]}`: 1 with a new reference in `*hit` for a cache hit, 0 when submitted under
/// `token`, -1 (nothing done) for any other body, input type or engine object, or a NULL pointer:
/// the caller then takes the full path.
///
/// # Safety
/// Called with the GIL held; `engine` is NULL or a live object, `body` is NULL or points to `len`
/// readable bytes, and `hit` is NULL or writable.
#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn submit_simple(
    engine: *mut capi::PyObject,
    body: *const u8,
    len: usize,
    input_type: u32,
    model: u32,
    slo_micros: u64,
    token: u64,
    hit: *mut *mut capi::PyObject,
) -> i32 {
    if engine.is_null() || hit.is_null() {
        return -1;
    }
    // SAFETY: `body` is NULL (refused there) or points to `len` readable bytes (the caller's contract).
    let Some((input_type, input)) = (unsafe { capi::simple_input(body, len, input_type) }) else { return -1 };
    // SAFETY: the caller holds the GIL (the C API's contract).
    let py = unsafe { Python::assume_gil_acquired() };
    // SAFETY: `engine` is a live object (non-NULL checked above); the caller's reference outlives the
    // call, and the Bound takes its own.
    let engine = unsafe { Bound::from_borrowed_ptr(py, engine.cast::<pyo3::ffi::PyObject>()) };
    let Ok(engine) = engine.downcast::<Engine>() else { return -1 };
    let slo = Duration::from_micros(slo_micros);
    match engine.get().inner.submit(token, model, input_type, &input, slo) {
        Some(output) => {
            let output = PyBytes::new(py, &output).into_ptr().cast::<capi::PyObject>();
            // SAFETY: `hit` is writable (the caller's contract, non-NULL checked above).
            unsafe { *hit = output };
            1
        }
        None => 0,
    }
}

/// The element bytes of a predict body that is exactly `{"input": [numbers]}`, else None: the fast
/// path of input validation, exposed for tests that compare it with the full validator.
#[pyfunction]
fn encode_simple_input<'py>(py: Python<'py>, body: &[u8], input_type_code: u8) -> PyResult<Option<Bound<'py, PyBytes>>> {
    let encoded = crate::simple_input::encode_simple_input(body, input_type(input_type_code)?);
    Ok(encoded.map(|bytes| PyBytes::new(py, &bytes)))
}

#[pymodule]
fn rust_core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Engine>()?;
    m.add_class::<Dealer>()?;
    let api = std::ptr::addr_of!(C_API).cast_mut().cast();
    // SAFETY: the capsule points to a static that lives as long as the process, and has no destructor
    // (the C side only reads it); PyCapsule_New returns a new reference, or NULL with an exception set,
    // which is what from_owned_ptr_or_err takes.
    let capsule = unsafe { Bound::from_owned_ptr_or_err(m.py(), pyo3::ffi::PyCapsule_New(api, C_API_NAME.as_ptr(), None))? };
    m.add("c_api", capsule)?;
    m.add_function(wrap_pyfunction!(encode_simple_input, m)?)?;
    m.add_function(wrap_pyfunction!(decode_batch, m)?)?;
    m.add_function(wrap_pyfunction!(encode_prediction, m)?)?;
    // The facts the layers above share, defined once here.
    m.add("DEFAULT_RPC_ADDRESS", engine::DEFAULT_RPC_ADDRESS)?;
    m.add("DEFAULT_CACHE_BYTES", engine::DEFAULT_CACHE_BYTES)?;
    m.add("DEFAULT_HEARTBEAT_TIMEOUT_S", engine::DEFAULT_HEARTBEAT_TIMEOUT.as_secs_f64())?;
    m.add("DEFAULT_MAX_QUEUE", engine::DEFAULT_MAX_QUEUE)?;
    m.add("DEFAULT_PING_INTERVAL_S", engine::DEFAULT_PING_INTERVAL.as_secs_f64())?;
    m.add("DEFAULT_PING_TIMEOUT_S", engine::DEFAULT_PING_TIMEOUT.as_secs_f64())?;
    m.add("SAMPLE_WINDOW", crate::stats::SAMPLE_WINDOW)?;
    let input_types = PyDict::new(m.py());
    for t in InputType::ALL {
        input_types.set_item(t.name(), t as u8)?;
    }
    m.add("INPUT_TYPES", input_types)?;
    for status in Status::ALL {
        m.add(format!("STATUS_{}", status.name().to_uppercase()), status as u8)?;
    }
    m.add("STATUS_NAMES", Status::ALL.map(Status::name).to_vec())?;
    Ok(())
}
