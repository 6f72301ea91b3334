//! `resid._resid`: the extension module behind the Python package `resid`
//! (python/resid). Thin over the same libraries as the CLI; the package
//! adds the arrays, the progress bar and the docs.

use pyo3::prelude::*;

mod api;
mod blocking;
mod errors;
mod reader;

/// Panics on the worker thread with `message`: the test that every panic
/// reaches Python as `resid.InternalError`.
#[pyfunction]
fn _panic_for_test(py: Python<'_>, message: String) -> PyResult<()> {
    blocking::run(py, None, move |_| -> Result<(), errors::Failure> {
        panic!("{message}")
    })
}

#[pymodule]
fn _resid(m: &Bound<'_, PyModule>) -> PyResult<()> {
    blocking::install_panic_hook();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(api::analyze, m)?)?;
    m.add_function(wrap_pyfunction!(api::analyze_several, m)?)?;
    m.add_function(wrap_pyfunction!(api::pack, m)?)?;
    m.add_function(wrap_pyfunction!(api::unpack, m)?)?;
    m.add_function(wrap_pyfunction!(api::inspect, m)?)?;
    m.add_class::<reader::Reader>()?;
    m.add_function(wrap_pyfunction!(_panic_for_test, m)?)?;
    Ok(())
}
