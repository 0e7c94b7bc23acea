//! Output store on the local filesystem (A1111's `outputs/` folder).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{OutputStore, PutOptions, StoreError, StoreFuture, StoredObject, validate_key};

/// Files under one root directory; keys are `/`-separated paths below it.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        validate_key(key)?;
        Ok(key.split('/').fold(self.root.clone(), |p, seg| p.join(seg)))
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.display().to_string(), source }
}

/// Filesystem work runs on the blocking pool: these calls can stall on slow disks.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Io {
        path: String::new(),
        source: std::io::Error::other(format!("store task failed: {e}")),
    })?
}

fn write_file(path: &Path, key: &str, body: &[u8], if_absent: bool) -> Result<(), StoreError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    if if_absent {
        // create_new is atomic: two writers racing for one number cannot both win.
        let mut f = match std::fs::OpenOptions::new().write(true).create_new(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StoreError::AlreadyExists { key: key.to_string() });
            }
            Err(e) => return Err(io_err(path)(e)),
        };
        f.write_all(body).map_err(io_err(path))
    } else {
        // Write then rename, so a reader (or a crash) never sees half a file at the final name.
        let tmp = path.with_extension("partial");
        std::fs::write(&tmp, body).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io_err(path))
    }
}

impl OutputStore for LocalStore {
    fn put<'a>(&'a self, key: &'a str, body: Vec<u8>, options: PutOptions) -> StoreFuture<'a, StoredObject> {
        Box::pin(async move {
            let path = self.path_of(key)?;
            let (p, k) = (path.clone(), key.to_string());
            blocking(move || write_file(&p, &k, &body, options.if_absent)).await?;
            Ok(StoredObject { location: path.display().to_string(), key: key.to_string() })
        })
    }

    fn list_names<'a>(&'a self, folder: &'a str) -> StoreFuture<'a, Vec<String>> {
        Box::pin(async move {
            let dir = if folder.is_empty() { self.root.clone() } else { self.path_of(folder)? };
            blocking(move || {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(io_err(&dir)(e)),
                };
                Ok(entries.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).collect())
            })
            .await
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let path = self.path_of(key)?;
            blocking(move || match std::fs::read(&path) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io_err(&path)(e)),
            })
            .await
        })
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}
