//! Checkpoints that are never half-written, and resuming from the newest complete one.

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::{
    lr_scheduler::LrScheduler,
    module::Module,
    optim::Optimizer,
    record::{
        BurnRecord, FileRecorder, NamedMpkBytesRecorder, NamedMpkFileRecorder,
        NamedMpkGzFileRecorder, PrecisionSettings, Record, Recorder, RecorderError,
    },
    tensor::{Device, backend::Backend},
};
use burn_train::{Learner, LearningComponentsTypes};
use flate2::{Compression, write::GzEncoder};
use serde::{Serialize, de::DeserializeOwned};

use super::record_check::{self, TensorEntry};

/// The names burn-train's file checkpointer gives the three records of an epoch, under
/// `<directory>/checkpoint/`: `model-<epoch>`, `optim-<epoch>` and `scheduler-<epoch>`.
const PARTS: [&str; 3] = ["model", "optim", "scheduler"];

/// Why a checkpoint could not be found or loaded.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The checkpoint folder could not be listed.
    #[error("cannot list the checkpoints in {path}: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// No epoch has all three files (model, optimizer, scheduler).
    #[error("no complete checkpoint (model, optim and scheduler files of one epoch) in {0}")]
    NotFound(PathBuf),
    /// A record file is missing, corrupt or of another model or optimizer.
    #[error("cannot load the {part} checkpoint of epoch {epoch} from {path}: {message}")]
    Record {
        /// `model`, `optim` or `scheduler`.
        part: &'static str,
        /// The epoch.
        epoch: usize,
        /// The file, without its extension.
        path: PathBuf,
        /// The recorder's message.
        message: String,
    },
}

/// A [`FileRecorder`] that never leaves a half-written or unsynced record under the final
/// name: it serializes the record in memory (in `inner`'s format), writes all of it to a
/// temporary file of a unique name in the same folder, syncs it to disk, renames it into place
/// and syncs the folder ([`crate::io::AtomicFile`]). Any error (a full disk, a quota, a
/// file-size limit) is returned and leaves the previous file under that name as it was.
/// Loading is `inner`'s.
///
/// Burn 0.21's own file recorders write through a `BufWriter` that is dropped without a flush,
/// so an error on their last write is lost; this one does not use their writing at all.
///
/// burn-train's checkpointer records on threads of its own while training goes on. This
/// recorder reads a record's tensors while none of the crate's optimizer wrappers
/// ([`ClipLatentWeights`](super::ClipLatentWeights), [`TrackFlips`](super::TrackFlips)) is
/// stepping, which Burn 0.21's `Fusion` backends (`burn::backend::Wgpu`, `Cuda`) need: there a
/// read racing with the step that replaces the same tensors panics ("Should have handle for
/// tensor"). So the learner trains on a fused backend with this recorder and the optimizer
/// wrapped in one of those.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::module::Module;
/// use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
/// use burn_qnn::{learner::AtomicFileRecorder, nn::BinaryLinearConfig};
///
/// let dir = tempfile::tempdir()?;
/// let recorder = AtomicFileRecorder::new(NamedMpkFileRecorder::<FullPrecisionSettings>::new());
/// let layer = BinaryLinearConfig::new(4, 2).init::<NdArray>(&Default::default());
/// layer.clone().save_file(dir.path().join("layer"), &recorder)?;
/// let names: Vec<_> = std::fs::read_dir(dir.path())?.map(|e| e.unwrap().file_name()).collect();
/// assert_eq!(names, ["layer.mpk"]);
/// let loaded = layer.load_file(dir.path().join("layer"), &recorder, &Default::default())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct AtomicFileRecorder<FR> {
    inner: FR,
}

impl<FR> AtomicFileRecorder<FR> {
    /// Writes in `inner`'s format.
    pub fn new(inner: FR) -> Self {
        Self { inner }
    }
}

/// A [`FileRecorder`] whose file content can be built in memory, which
/// [`AtomicFileRecorder`] then writes itself: Burn's `NamedMpkFileRecorder` and
/// `NamedMpkGzFileRecorder` (the bytes are the same as those recorders write).
///
/// The files are MessagePack (compressed or not), which lets [`load_checkpoint_model`] and
/// [`restore_checkpoint`] check a file's tensors before Burn builds them.
pub trait InMemoryFormat<B: Backend>: FileRecorder<B> {
    /// The bytes of the file `self` would write for `item`.
    ///
    /// # Errors
    /// If `item` cannot be serialized.
    fn to_bytes<I: Serialize>(&self, item: I) -> Result<Vec<u8>, RecorderError>;

    /// The MessagePack bytes of the record in `file` (the content of a file `self` wrote).
    ///
    /// # Errors
    /// If `file` cannot be decoded (e.g. broken compressed data).
    fn msgpack(&self, file: Vec<u8>) -> Result<Vec<u8>, RecorderError>;
}

impl<S: PrecisionSettings, B: Backend> InMemoryFormat<B> for NamedMpkFileRecorder<S> {
    fn to_bytes<I: Serialize>(&self, item: I) -> Result<Vec<u8>, RecorderError> {
        Recorder::<B>::save_item(&NamedMpkBytesRecorder::<S>::default(), item, ())
    }

    fn msgpack(&self, file: Vec<u8>) -> Result<Vec<u8>, RecorderError> {
        Ok(file)
    }
}

impl<S: PrecisionSettings, B: Backend> InMemoryFormat<B> for NamedMpkGzFileRecorder<S> {
    fn to_bytes<I: Serialize>(&self, item: I) -> Result<Vec<u8>, RecorderError> {
        let plain = Recorder::<B>::save_item(&NamedMpkBytesRecorder::<S>::default(), item, ())?;
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder
            .write_all(&plain)
            .and_then(|()| encoder.finish())
            .map_err(|e| RecorderError::Unknown(format!("cannot compress the record: {e}")))
    }

    fn msgpack(&self, file: Vec<u8>) -> Result<Vec<u8>, RecorderError> {
        // Bounded by what deflate can give for the file's size: a stream built to inflate
        // without end is an error there.
        crate::data::files::gunzip(Path::new("the record"), &file)
            .map_err(|e| RecorderError::Unknown(e.to_string()))
    }
}

impl<B: Backend, FR: InMemoryFormat<B>> InMemoryFormat<B> for AtomicFileRecorder<FR> {
    fn to_bytes<I: Serialize>(&self, item: I) -> Result<Vec<u8>, RecorderError> {
        self.inner.to_bytes(item)
    }

    fn msgpack(&self, file: Vec<u8>) -> Result<Vec<u8>, RecorderError> {
        self.inner.msgpack(file)
    }
}

impl<B: Backend, FR: InMemoryFormat<B>> Recorder<B> for AtomicFileRecorder<FR> {
    type Settings = FR::Settings;
    type RecordArgs = PathBuf;
    type RecordOutput = ();
    type LoadArgs = PathBuf;

    /// Reads `record`'s tensors while the crate's optimizers are not stepping (see the type's
    /// documentation), then writes them as [`Recorder::record`] does.
    fn record<R: Record<B>>(&self, record: R, file: PathBuf) -> Result<(), RecorderError> {
        let item = super::record_reads::exclusively(|| record.into_item::<Self::Settings>());
        self.save_item(BurnRecord::new::<Self>(item), file)
    }

    fn save_item<I: Serialize>(&self, item: I, mut file: PathBuf) -> Result<(), RecorderError> {
        file.set_extension(<FR as FileRecorder<B>>::file_extension());
        let bytes = self.inner.to_bytes(item)?;
        if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                RecorderError::Unknown(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        crate::io::write_atomic(&file, bytes)
            .map_err(|e| RecorderError::Unknown(format!("cannot write {}: {e}", file.display())))
    }

    fn load_item<I: DeserializeOwned>(&self, file: &mut PathBuf) -> Result<I, RecorderError> {
        self.inner.load_item(file)
    }
}

impl<B: Backend, FR: InMemoryFormat<B>> FileRecorder<B> for AtomicFileRecorder<FR> {
    fn file_extension() -> &'static str {
        FR::file_extension()
    }
}

/// The newest epoch with a complete checkpoint (model, optimizer and scheduler files, with
/// `extension`) that burn-train's file checkpointer wrote under `directory/checkpoint`, the
/// `directory` given to `SupervisedTraining::new`; `None` if there is no checkpoint folder or
/// no complete epoch in it.
///
/// # Errors
/// If the checkpoint folder exists but cannot be listed.
pub fn last_checkpoint(
    directory: &Path,
    extension: &str,
) -> Result<Option<usize>, CheckpointError> {
    let folder = directory.join("checkpoint");
    let entries = match std::fs::read_dir(&folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CheckpointError::Io {
                path: folder,
                source,
            });
        }
    };
    // For each epoch, which of the three parts are there (a bit each): a part counts once,
    // and only under the exact name burn-train writes and `restore_checkpoint` reads
    // (`model-3`, not `model-03` or `model-+3`).
    let mut found: std::collections::BTreeMap<usize, u8> = Default::default();
    for entry in entries {
        let entry = entry.map_err(|source| CheckpointError::Io {
            path: folder.clone(),
            source,
        })?;
        let name = entry.file_name();
        let Some(stem) = name
            .to_str()
            .and_then(|n| n.strip_suffix(extension))
            .and_then(|n| n.strip_suffix('.'))
        else {
            continue;
        };
        for (bit, part) in PARTS.iter().enumerate() {
            if let Some(epoch) = stem
                .strip_prefix(part)
                .and_then(|rest| rest.strip_prefix('-'))
                .and_then(|n| n.parse::<usize>().ok().filter(|e| e.to_string() == n))
            {
                *found.entry(epoch).or_default() |= 1 << bit;
            }
        }
    }
    let complete = (1u8 << PARTS.len()) - 1;
    Ok(found
        .into_iter()
        .rev()
        .find(|&(_, parts)| parts == complete)
        .map(|(epoch, _)| epoch))
}

/// Loads the checkpoint of `epoch` under `directory/checkpoint` (model, optimizer state and
/// learning-rate scheduler, as burn-train's file checkpointer wrote them with `recorder`) into
/// `learner`. burn-train's own loading panics on a missing or corrupt file; call this first to
/// get an error instead, then pass the epoch to `SupervisedTraining::checkpoint`, and give
/// `SupervisedTraining::with_metric_logger` a
/// [`resumable_metric_logger(directory, Some(epoch))`](super::resumable_metric_logger) so that
/// the resumed epochs' metrics are logged under their own numbers.
///
/// Each file is checked before Burn builds tensors from it, as in [`load_checkpoint_model`]:
/// the model's against the learner's model, the optimizer's and scheduler's against their
/// tensors' own shapes.
///
/// # Errors
/// [`CheckpointError::Record`] if a file is missing, corrupt or does not match the learner's
/// model or optimizer.
pub fn restore_checkpoint<LC, FR>(
    mut learner: Learner<LC>,
    directory: &Path,
    epoch: usize,
    recorder: &FR,
    device: &Device<LC::Backend>,
) -> Result<Learner<LC>, CheckpointError>
where
    LC: LearningComponentsTypes,
    FR: InMemoryFormat<LC::Backend>,
{
    let folder = directory.join("checkpoint");
    let path = |part: &str| folder.join(format!("{part}-{epoch}"));
    let error = |part: &'static str, message: String| CheckpointError::Record {
        part,
        epoch,
        path: path(part),
        message,
    };
    check_model_file(&learner.model(), recorder, &path(PARTS[0]))
        .map_err(|message| error(PARTS[0], message))?;
    // The optimizer's and scheduler's states have no shapes to compare with before they are
    // loaded; their tensors are checked against their own shapes.
    for &part in &PARTS[1..] {
        check_record_file::<LC::Backend, _>(recorder, &path(part), None)
            .map_err(|message| error(part, message))?;
    }
    let model: <LC::TrainingModel as Module<LC::Backend>>::Record = recorder
        .load(path(PARTS[0]), device)
        .map_err(|e| error(PARTS[0], e.to_string()))?;
    let optim: <LC::Optimizer as Optimizer<LC::TrainingModel, LC::Backend>>::Record = recorder
        .load(path(PARTS[1]), device)
        .map_err(|e| error(PARTS[1], e.to_string()))?;
    let scheduler: <LC::LrScheduler as LrScheduler>::Record<LC::Backend> = recorder
        .load(path(PARTS[2]), device)
        .map_err(|e| error(PARTS[2], e.to_string()))?;
    learner.load_model(model);
    learner.load_optim(optim);
    learner.load_scheduler(scheduler);
    Ok(learner)
}

/// Loads the model of the checkpoint of `epoch` under `directory/checkpoint` (the
/// `model-<epoch>` file burn-train's file checkpointer wrote with `recorder`) into `model`, on
/// any backend (e.g. the inner backend of the training one, for evaluation). With
/// [`best_valid_epoch`](super::best_valid_epoch) this gives the best-validation model.
///
/// The file is checked before Burn builds tensors from it (Burn's own loading trusts a file's
/// shapes and byte counts): every tensor's bytes must fit its shape and data type, and the
/// tensors must be those of `model`, with the same shapes.
///
/// # Errors
/// [`CheckpointError::Record`] if the file is missing, corrupt or of another model (naming the
/// first tensor that differs).
pub fn load_checkpoint_model<B, M, FR>(
    model: M,
    directory: &Path,
    epoch: usize,
    recorder: &FR,
    device: &Device<B>,
) -> Result<M, CheckpointError>
where
    B: Backend,
    M: Module<B>,
    FR: InMemoryFormat<B>,
{
    let path = directory
        .join("checkpoint")
        .join(format!("{}-{epoch}", PARTS[0]));
    let error = |message: String| CheckpointError::Record {
        part: PARTS[0],
        epoch,
        path: path.clone(),
        message,
    };
    check_model_file(&model, recorder, &path).map_err(error)?;
    let record = recorder
        .load(path.clone(), device)
        .map_err(|e| error(e.to_string()))?;
    Ok(model.load_record(record))
}

/// Checks the record file `path` of a model (with `recorder`'s extension added) against
/// `model`, as [`check_record_file`] does with `model`'s own tensors expected.
fn check_model_file<B, M, FR>(model: &M, recorder: &FR, path: &Path) -> Result<(), String>
where
    B: Backend,
    M: Module<B>,
    FR: InMemoryFormat<B>,
{
    let expected = record_tensors(model, recorder)?;
    check_record_file(recorder, path, Some(&expected))
}

/// The tensors of `model`'s record as `recorder` writes it.
fn record_tensors<B, M, FR>(model: &M, recorder: &FR) -> Result<Vec<TensorEntry>, String>
where
    B: Backend,
    M: Module<B>,
    FR: InMemoryFormat<B>,
{
    let item = <M::Record as Record<B>>::into_item::<<FR as Recorder<B>>::Settings>(
        model.clone().into_record(),
    );
    let bytes = recorder
        .to_bytes(BurnRecord::<_, B>::new::<FR>(item))
        .and_then(|file| recorder.msgpack(file))
        .map_err(|e| format!("cannot serialize the model's own record: {e}"))?;
    Ok(record_check::read(&bytes)?.tensors)
}

/// Checks the record file `path` (with `recorder`'s extension added) before Burn builds
/// tensors from it: it must be MessagePack in which every tensor's byte count is what its shape
/// and data type hold, and, given `expected` (the tensors of the record it is to replace), hold
/// the same tensors with the same shapes and data types.
fn check_record_file<B, FR>(
    recorder: &FR,
    path: &Path,
    expected: Option<&[TensorEntry]>,
) -> Result<(), String>
where
    B: Backend,
    FR: InMemoryFormat<B>,
{
    let mut file = path.to_path_buf();
    file.set_extension(<FR as FileRecorder<B>>::file_extension());
    let bytes = std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let plain = recorder.msgpack(bytes).map_err(|e| e.to_string())?;
    let record = record_check::read(&plain).map_err(|e| format!("not a record: {e}"))?;
    if let Some((at, id)) = record
        .param_ids
        .iter()
        .find(|(_, id)| !record_check::param_id_is_valid(id))
    {
        return Err(format!(
            "parameter {at} has the id {id:?}, which is not a parameter id"
        ));
    }
    let found = record.tensors;
    let describe = |t: &TensorEntry| {
        let shape = t.shape.as_ref().map(|s| format!("{s:?}"));
        format!(
            "{} of shape {}",
            t.dtype.as_deref().unwrap_or("(no plain data type)"),
            shape.as_deref().unwrap_or("(not a list of sizes)")
        )
    };
    if let Some(bad) = found.iter().find(|t| !t.consistent()) {
        return Err(format!(
            "tensor {} has {} bytes, not what {} holds",
            bad.path,
            bad.bytes,
            describe(bad)
        ));
    }
    let Some(expected) = expected else {
        return Ok(());
    };
    for want in expected {
        match found.iter().find(|t| t.path == want.path) {
            None => return Err(format!("the file has no tensor {}", want.path)),
            Some(got) if (&got.shape, &got.dtype) != (&want.shape, &want.dtype) => {
                return Err(format!(
                    "tensor {} is {} in the file but {} in the model",
                    want.path,
                    describe(got),
                    describe(want)
                ));
            }
            Some(_) => {}
        }
    }
    match found
        .iter()
        .find(|t| !expected.iter().any(|e| e.path == t.path))
    {
        Some(extra) => Err(format!(
            "the file has a tensor {} the model does not have",
            extra.path
        )),
        None => Ok(()),
    }
}
