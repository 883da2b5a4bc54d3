//! Serving with a per-worker setup step: `init(params)` once, its result
//! handed to every chunk.

use std::cell::RefCell;
use std::fmt::Display;

use crate::context::{Chunk, Context};
use crate::error::WorkerError;
use crate::serve::serve_after;

/// [`serve`](crate::serve), with a setup step: `init` is called once, after
/// the handshake (so [`Context::params`] holds the job's params) and before
/// the first chunk, and what it returns is handed to `handler` with every
/// chunk, as `&mut S`: a model or a lookup table loads once per worker, not
/// once per chunk.
///
/// Should `init` fail, no chunk is answered: `serve_with_init` returns
/// [`WorkerError::Init`] with the error's text, for the program to print and
/// exit non-zero, and the supervisor sees a worker that died as it started.
/// The time `init` takes is not counted in any chunk's `elapsed_ns`, but the
/// supervisor's clock for the first chunk's `timeout` is already running.
/// Setup that needs no params belongs before the call, where a failure ends
/// the worker before it even says hello.
///
/// ```no_run
/// use std::io::Write;
///
/// #[derive(serde::Deserialize)]
/// struct Params {
///     modulus: u64,
/// }
///
/// fn main() -> Result<(), worker::WorkerError> {
///     worker::serve_with_init(
///         |ctx| ctx.params::<Params>().map(|p| p.modulus),
///         |modulus, _ctx, chunk, out| {
///             let sum: u64 = (chunk.start..chunk.end).map(|i| (i * i) % *modulus).sum();
///             write!(out, "{sum}")
///         },
///     )
/// }
/// ```
///
/// # Errors
///
/// Those of [`serve`](crate::serve), and [`WorkerError::Init`].
pub fn serve_with_init<S, I, IE, H, E>(init: I, mut handler: H) -> Result<(), WorkerError>
where
    I: FnOnce(&Context) -> Result<S, IE>,
    IE: Display,
    H: FnMut(&mut S, &Context, &Chunk, &mut Vec<u8>) -> Result<(), E>,
    E: Display,
{
    let state = RefCell::new(None);
    serve_after(
        |ctx| {
            let value = init(ctx).map_err(|e| WorkerError::Init(e.to_string()))?;
            *state.borrow_mut() = Some(value);
            Ok(())
        },
        |ctx, chunk, out| {
            let mut state = state.borrow_mut();
            let value = state.as_mut().expect("init ran before the first chunk");
            handler(value, ctx, chunk, out)
        },
    )
}
