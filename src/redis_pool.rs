//! A small pool of blocking Redis connections, for code that runs on the
//! writer thread or the blocking pool (never on the async runtime).

use std::sync::Mutex;
use std::time::Duration;

use redis::{Client, Connection};

use crate::queue::StoreError;

/// Connect and per-command timeout.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("redis: {e}"))
}

/// A pool of blocking connections to one Redis server.
pub(crate) struct Pool {
    client: Client,
    idle: Mutex<Vec<Connection>>,
}

impl Pool {
    /// Runs `f` on an idle connection (or a new one); a connection that saw
    /// an error is dropped rather than reused.
    pub(crate) fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut con = match idle {
            Some(c) => c,
            None => {
                let c = self
                    .client
                    .get_connection_with_timeout(IO_TIMEOUT)
                    .map_err(backend)?;
                c.set_read_timeout(Some(IO_TIMEOUT)).map_err(backend)?;
                c.set_write_timeout(Some(IO_TIMEOUT)).map_err(backend)?;
                c
            }
        };
        let result = f(&mut con);
        if result.is_ok() {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(con);
        }
        result.map_err(backend)
    }
}

impl Pool {
    /// A pool for `client`; connections open on first use.
    pub(crate) fn new(client: Client) -> Self {
        Self {
            client,
            idle: Mutex::new(Vec::new()),
        }
    }
}
