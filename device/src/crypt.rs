//! Encryption at rest of the gallery file, and the device key it is encrypted with.
//!
//! The gallery holds biometric templates: a copied SD card or backup must not give them away,
//! and a modified file must not be trusted. [`seal`] wraps the gallery's plaintext bytes (the
//! [`autograph_shared::gallery`] format, unchanged and opaque here) in an envelope encrypted and
//! authenticated with XChaCha20-Poly1305 under a 32-byte device key; [`open`] checks and
//! removes it.
//!
//! ```text
//! header      magic        8 bytes  b"AGGENC01"
//!             version      u32 LE   1
//!             key_id       8 bytes  first 8 bytes of sha256(key): tells a wrong key from damage
//!             nonce        24 bytes random, from the OS, new for every write
//!             body_len     u64 LE   length of what follows (ciphertext + 16-byte tag)
//! body        ciphertext   the plaintext gallery bytes, encrypted
//!             tag          16 bytes Poly1305 tag over the header (as associated data) and
//!                                   the ciphertext
//! ```
//!
//! Every header byte is authenticated: a flipped bit anywhere is refused ([`CryptError::Tampered`],
//! or [`CryptError::WrongKey`] when it lands in the key id), as is a truncated or extended file
//! ([`CryptError::Length`]). Random 192-bit nonces cannot collide in practice, however many times
//! the gallery is rewritten under one key.
//!
//! # The key file
//!
//! A [`KeyFile`] holds the 32 key bytes (raw; 64 hex digits are accepted too, for a key
//! restored from a written-down back-up). It must be private (no group or other permission
//! bits, as ssh demands of private keys), and it lives outside the gallery's directory: by
//! default `$XDG_CONFIG_HOME/autograph/gallery.key` or `~/.config/autograph/gallery.key`, so a
//! copy of the gallery's directory does not carry its key. It is created from the OS's CSPRNG
//! the first time a gallery is written and none exists: written to a private temporary file,
//! fsynced, then hard-linked into place, which fails rather than replaces when another process
//! created it first. A key is never created while a gallery encrypted under another key exists
//! (the store checks), so a lost key cannot be silently replaced by a new one.
//!
//! Operators: back the key file up somewhere other than the gallery's back-ups. Without it the
//! gallery cannot be read by anyone, including us: every writer must enrol again. The key id
//! (`sha256sum gallery.key | cut -c1-16`) names a key without revealing it; `autograph gallery
//! check` prints the id the gallery needs. `autograph gallery rekey --new-key FILE` re-encrypts
//! the gallery under another key (atomically), for a rotation or a suspected leak.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use chacha20poly1305::aead::{AeadInOut, Generate, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// First bytes of every encrypted gallery file.
pub const MAGIC: [u8; 8] = *b"AGGENC01";
/// The envelope version this build reads and writes.
pub const VERSION: u32 = 1;
/// Length of a device key.
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const OFF_VERSION: usize = 8;
const OFF_KEY_ID: usize = 12;
const OFF_NONCE: usize = 20;
const OFF_BODY_LEN: usize = OFF_NONCE + NONCE_LEN;
/// Length of the envelope's header.
pub const HEADER_LEN: usize = OFF_BODY_LEN + 8;
/// Bytes the envelope adds to the plaintext.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Permissions of a created key file (and the bits an existing one must not have).
const KEY_MODE: u32 = 0o600;
const KEY_FORBIDDEN_BITS: u32 = 0o077;
/// Permissions of a key directory this module creates.
const KEY_DIR_MODE: u32 = 0o700;
/// A key file longer than this is not a key (64 hex digits and a line break fit).
const MAX_KEY_FILE_LEN: u64 = 128;

/// The first 8 bytes of the sha256 of a key: names a key without revealing it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A device key. Its bytes are wiped from memory when it is dropped and never printed.
#[derive(Clone)]
pub struct GalleryKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    id: KeyId,
}

impl fmt::Debug for GalleryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GalleryKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl GalleryKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        let bytes = Zeroizing::new(bytes);
        let digest = Sha256::digest(bytes.as_slice());
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        Self { bytes, id: KeyId(id) }
    }

    /// A new random key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self, KeyError> {
        let bytes = Zeroizing::new(<[u8; KEY_LEN]>::try_generate().map_err(|e| KeyError::Random(e.to_string()))?);
        Ok(Self::from_bytes(*bytes))
    }

    pub fn id(&self) -> KeyId {
        self.id
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&(*self.bytes).into())
    }
}

/// Why an envelope could not be opened (or made).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptError {
    /// The bytes do not start with [`MAGIC`].
    #[error("not an encrypted gallery (bad magic bytes)")]
    NotEncrypted,
    #[error("the encrypted gallery is truncated or has extra bytes: {expected} bytes expected, {found} present")]
    Length { expected: u64, found: u64 },
    #[error("encrypted gallery format version {found} is not supported; this build reads version {VERSION}")]
    UnsupportedVersion { found: u32 },
    #[error(
        "the gallery is encrypted under key {file}, but the key file holds key {key} \
         (the wrong key file, or a damaged header)"
    )]
    WrongKey { file: KeyId, key: KeyId },
    #[error("authentication failed: the encrypted gallery was modified or damaged")]
    Tampered,
    #[error("cannot encrypt: {0}")]
    Encrypt(String),
}

/// True when `bytes` start like an encrypted gallery (or are a prefix of its magic: a file cut
/// short in its first bytes is a damaged encrypted gallery, not a plain one).
pub fn looks_encrypted(bytes: &[u8]) -> bool {
    let n = bytes.len().min(MAGIC.len());
    bytes[..n] == MAGIC[..n]
}

/// The key id an encrypted gallery's header names (header checks only; nothing is decrypted).
pub fn key_id_of(bytes: &[u8]) -> Result<KeyId, CryptError> {
    parse_header(bytes).map(|(id, _, _)| id)
}

/// Checks magic, version and length; returns the key id, the nonce and the body.
fn parse_header(bytes: &[u8]) -> Result<(KeyId, &[u8], &[u8]), CryptError> {
    if !looks_encrypted(bytes) {
        return Err(CryptError::NotEncrypted);
    }
    let found = bytes.len() as u64;
    if bytes.len() < OVERHEAD {
        return Err(CryptError::Length { expected: OVERHEAD as u64, found });
    }
    let version = u32::from_le_bytes(bytes[OFF_VERSION..OFF_KEY_ID].try_into().map_err(|_| CryptError::Tampered)?);
    if version != VERSION {
        return Err(CryptError::UnsupportedVersion { found: version });
    }
    let body_len = u64::from_le_bytes(bytes[OFF_BODY_LEN..HEADER_LEN].try_into().map_err(|_| CryptError::Tampered)?);
    let expected = (HEADER_LEN as u64).saturating_add(body_len);
    if expected != found || body_len < TAG_LEN as u64 {
        return Err(CryptError::Length { expected: expected.max(OVERHEAD as u64), found });
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&bytes[OFF_KEY_ID..OFF_NONCE]);
    Ok((KeyId(id), &bytes[OFF_NONCE..OFF_BODY_LEN], &bytes[HEADER_LEN..]))
}

/// Encrypts `plaintext` under `key` with a fresh random nonce.
pub fn seal(key: &GalleryKey, plaintext: &[u8]) -> Result<Vec<u8>, CryptError> {
    let nonce = XNonce::try_generate().map_err(|e| CryptError::Encrypt(format!("no random nonce: {e}")))?;
    let body_len = (plaintext.len() + TAG_LEN) as u64;
    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&key.id().0);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(plaintext);
    let (header, body) = out.split_at_mut(HEADER_LEN);
    let tag = key
        .cipher()
        .encrypt_inout_detached(&nonce, header, body.into())
        .map_err(|_| CryptError::Encrypt("the gallery is too large for one message".into()))?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Checks and decrypts an envelope made by [`seal`]. (The plaintext is not wiped from memory
/// afterwards: the gallery it decodes to lives there anyway.)
pub fn open(key: &GalleryKey, bytes: &[u8]) -> Result<Vec<u8>, CryptError> {
    let (file_key, nonce, body) = parse_header(bytes)?;
    if file_key != key.id() {
        return Err(CryptError::WrongKey { file: file_key, key: key.id() });
    }
    let (ciphertext, tag) = body.split_at(body.len() - TAG_LEN);
    let nonce = XNonce::try_from(nonce).map_err(|_| CryptError::Tampered)?;
    let tag = Tag::try_from(tag).map_err(|_| CryptError::Tampered)?;
    let mut plaintext = ciphertext.to_vec();
    key.cipher()
        .decrypt_inout_detached(&nonce, &bytes[..HEADER_LEN], plaintext.as_mut_slice().into(), &tag)
        .map_err(|_| CryptError::Tampered)?;
    Ok(plaintext)
}

/// Problems with a key file; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("gallery key file {} does not exist", path.display())]
    NotFound { path: PathBuf },
    #[error("cannot {action} gallery key file {}: {error}", path.display())]
    Io { path: PathBuf, action: &'static str, error: io::Error },
    #[error(
        "gallery key file {} is accessible by group or others (mode {mode:03o}); a key must be \
         private: chmod 600 {}",
        path.display(),
        path.display()
    )]
    NotPrivate { path: PathBuf, mode: u32 },
    #[error("gallery key file {} is not a key: {len} bytes, expected {KEY_LEN} raw bytes or 64 hex digits", path.display())]
    Malformed { path: PathBuf, len: u64 },
    #[error("gallery key file {} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error(
        "no gallery key file given and no default location (neither XDG_CONFIG_HOME nor HOME is set): \
         pass --gallery-key FILE or set AUTOGRAPH_GALLERY_KEY"
    )]
    NoDefaultLocation,
    #[error(
        "the default gallery key file {} would be in the gallery's own directory; keep the key apart \
         from the gallery: pass --gallery-key FILE elsewhere",
        path.display()
    )]
    BesideGallery { path: PathBuf },
    #[error("cannot generate a gallery key: the operating system's random generator failed: {0}")]
    Random(String),
}

/// Where a device key is kept. Reading never creates; [`KeyFile::read_or_create`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    path: PathBuf,
}

impl KeyFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// `$XDG_CONFIG_HOME/autograph/gallery.key`, else `$HOME/.config/autograph/gallery.key`.
    pub fn default_path() -> Result<PathBuf, KeyError> {
        let var = |name: &str| std::env::var_os(name).map(PathBuf::from).filter(|p| p.is_absolute());
        let config = var("XDG_CONFIG_HOME")
            .or_else(|| var("HOME").map(|home| home.join(".config")))
            .ok_or(KeyError::NoDefaultLocation)?;
        Ok(config.join("autograph").join("gallery.key"))
    }

    /// The key file for `gallery`: `explicit` when given, else [`KeyFile::default_path`], which
    /// is refused when it lies in the gallery's own directory (a copy of that directory must
    /// not carry the key).
    pub fn resolve(explicit: Option<&Path>, gallery: &Path) -> Result<Self, KeyError> {
        if let Some(path) = explicit {
            return Ok(Self::new(path));
        }
        let path = Self::default_path()?;
        let same_dir = |a: Option<&Path>, b: Option<&Path>| {
            // Directories that do not exist yet compare by their absolute form.
            let canonical = |p: Option<&Path>| {
                let p = p.filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                fs::canonicalize(p).or_else(|_| std::path::absolute(p)).ok()
            };
            matches!((canonical(a), canonical(b)), (Some(a), Some(b)) if a == b)
        };
        if same_dir(path.parent(), gallery.parent()) {
            return Err(KeyError::BesideGallery { path });
        }
        Ok(Self::new(path))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the key. A missing file is [`KeyError::NotFound`]; a file others can access is
    /// refused before its bytes are read.
    pub fn read(&self) -> Result<GalleryKey, KeyError> {
        let path = &self.path;
        let io = |action| move |error| KeyError::Io { path: path.clone(), action, error };
        let file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(KeyError::NotFound { path: path.clone() }),
            Err(e) => return Err(io("open")(e)),
        };
        let meta = file.metadata().map_err(io("inspect"))?;
        if !meta.is_file() {
            return Err(KeyError::NotAFile { path: path.clone() });
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & KEY_FORBIDDEN_BITS != 0 {
            return Err(KeyError::NotPrivate { path: path.clone(), mode });
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE_LEN as usize + 1));
        file.take(MAX_KEY_FILE_LEN + 1).read_to_end(&mut bytes).map_err(io("read"))?;
        parse_key(&bytes).ok_or(KeyError::Malformed { path: path.clone(), len: bytes.len() as u64 })
    }

    /// Reads the key, or creates a new random one when the file does not exist (the boolean
    /// says so). Creation is atomic and never replaces a key another process created meanwhile.
    pub fn read_or_create(&self) -> Result<(GalleryKey, bool), KeyError> {
        match self.read() {
            Err(KeyError::NotFound { .. }) => {}
            other => return other.map(|key| (key, false)),
        }
        let key = GalleryKey::generate()?;
        match self.create(&key) {
            Ok(()) => Ok((key, true)),
            // Another process created the key first: use theirs.
            Err(KeyError::Io { error, .. }) if error.kind() == io::ErrorKind::AlreadyExists => {
                self.read().map(|key| (key, false))
            }
            Err(e) => Err(e),
        }
    }

    /// Writes `key` to a new private file and links it into place (fails if the file exists).
    fn create(&self, key: &GalleryKey) -> Result<(), KeyError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = &self.path;
        let io = |path: &Path, action| {
            let path = path.to_path_buf();
            move |error| KeyError::Io { path, action, error }
        };
        let name = path.file_name().ok_or_else(|| {
            io(path, "create")(io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file"))
        })?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        DirBuilder::new()
            .recursive(true)
            .mode(KEY_DIR_MODE)
            .create(&dir)
            .map_err(io(&dir, "create the directory of"))?;
        let mut temp_name = OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".new-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
        let temp = dir.join(temp_name);
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(KEY_MODE)
                .open(&temp)
                .map_err(io(&temp, "create"))?;
            file.set_permissions(Permissions::from_mode(KEY_MODE)).map_err(io(&temp, "set permissions on"))?;
            file.write_all(key.bytes.as_slice()).map_err(io(&temp, "write"))?;
            file.sync_all().map_err(io(&temp, "sync"))?;
            // link(2) fails with AlreadyExists instead of replacing: no race with another creator.
            fs::hard_link(&temp, path).map_err(io(path, "create"))
        })();
        let _ = fs::remove_file(&temp);
        written?;
        File::open(&dir).and_then(|d| d.sync_all()).map_err(io(&dir, "sync the directory of"))
    }
}

/// 32 raw bytes, or 64 hex digits (surrounding white space allowed).
fn parse_key(bytes: &[u8]) -> Option<GalleryKey> {
    if let Ok(raw) = <[u8; KEY_LEN]>::try_from(bytes) {
        return Some(GalleryKey::from_bytes(raw));
    }
    let text = std::str::from_utf8(bytes).ok()?.trim();
    let mut raw = Zeroizing::new([0u8; KEY_LEN]);
    hex::decode_to_slice(text, raw.as_mut_slice()).ok()?;
    Some(GalleryKey::from_bytes(*raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> GalleryKey {
        GalleryKey::from_bytes([byte; KEY_LEN])
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn seal_open_round_trip() {
        let k = key(1);
        for plaintext in [&b""[..], b"x", &[7u8; 5000]] {
            let sealed = seal(&k, plaintext).expect("seal");
            assert_eq!(sealed.len(), plaintext.len() + OVERHEAD);
            assert!(sealed.starts_with(&MAGIC));
            assert_eq!(key_id_of(&sealed), Ok(k.id()));
            assert_eq!(open(&k, &sealed).expect("open").as_slice(), plaintext);
            // Only a plaintext long enough that random ciphertext cannot contain it by chance
            // (a one-byte plaintext appears in ~15% of sealed files).
            if plaintext.len() >= 16 {
                assert!(!sealed.windows(plaintext.len()).any(|w| w == plaintext), "no plaintext in the file");
            }
        }
        // A fresh nonce for every write: the same plaintext never gives the same bytes.
        assert_ne!(seal(&k, b"same").expect("seal"), seal(&k, b"same").expect("seal"));
    }

    #[test]
    fn key_id_is_the_sha256_prefix() {
        let k = key(0);
        assert_eq!(k.id().to_string(), hex::encode(&Sha256::digest([0u8; 32])[..8]));
        assert!(!format!("{k:?}").contains("0000000000000000000000000000000000000000"), "{k:?}");
    }

    #[test]
    fn every_flipped_byte_and_every_truncation_is_refused() {
        let k = key(2);
        let sealed = seal(&k, &[0x5a; 300]).expect("seal");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            let err = open(&k, &bad).expect_err("a flipped byte must be refused");
            let expected = match i {
                0..OFF_VERSION => matches!(err, CryptError::NotEncrypted),
                OFF_VERSION..OFF_KEY_ID => matches!(err, CryptError::UnsupportedVersion { .. }),
                OFF_KEY_ID..OFF_NONCE => matches!(err, CryptError::WrongKey { .. }),
                OFF_BODY_LEN..HEADER_LEN => matches!(err, CryptError::Length { .. }),
                _ => err == CryptError::Tampered,
            };
            assert!(expected, "byte {i}: {err}");
        }
        for len in 0..sealed.len() {
            assert!(open(&k, &sealed[..len]).is_err(), "truncated to {len}");
        }
        let mut longer = sealed.clone();
        longer.push(0);
        assert!(matches!(open(&k, &longer), Err(CryptError::Length { .. })));
    }

    #[test]
    fn wrong_key_is_told_apart_from_damage() {
        let sealed = seal(&key(3), b"templates").expect("seal");
        let err = open(&key(4), &sealed).expect_err("wrong key");
        assert_eq!(err, CryptError::WrongKey { file: key(3).id(), key: key(4).id() });
        assert!(err.to_string().contains(&key(3).id().to_string()), "{err}");
    }

    #[test]
    fn key_file_created_once_private_and_never_replaced() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = KeyFile::new(dir.path().join("conf/autograph/gallery.key"));
        assert!(matches!(file.read(), Err(KeyError::NotFound { .. })));
        let (created, fresh) = file.read_or_create().expect("create");
        assert!(fresh);
        assert_eq!(mode_of(file.path()), 0o600);
        assert_eq!(mode_of(&dir.path().join("conf/autograph")), 0o700);
        assert_eq!(fs::read(file.path()).expect("read").len(), KEY_LEN);
        let (again, fresh) = file.read_or_create().expect("read");
        assert!(!fresh);
        assert_eq!(again.id(), created.id());
        // No temporary file is left beside it.
        assert_eq!(fs::read_dir(dir.path().join("conf/autograph")).expect("dir").count(), 1);
        // Two keys in a row differ.
        let other = KeyFile::new(dir.path().join("other.key"));
        assert_ne!(other.read_or_create().expect("create").0.id(), created.id());

        // Concurrent creators all end up with the one key that was linked into place.
        let racing = KeyFile::new(dir.path().join("race/gallery.key"));
        let ids: Vec<KeyId> = (0..6)
            .map(|_| {
                let racing = racing.clone();
                std::thread::spawn(move || racing.read_or_create().expect("create").0.id())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect();
        assert!(ids.iter().all(|id| *id == racing.read().expect("read").id()), "{ids:?}");
    }

    #[test]
    fn key_files_others_can_read_or_that_are_not_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("gallery.key");
        let file = KeyFile::new(&path);
        file.read_or_create().expect("create");
        for mode in [0o640, 0o604, 0o660] {
            fs::set_permissions(&path, Permissions::from_mode(mode)).expect("chmod");
            let err = file.read().expect_err("a shared key is refused");
            assert!(matches!(err, KeyError::NotPrivate { .. }), "{err}");
            assert!(err.to_string().contains("chmod 600"), "{err}");
            // ... and not replaced either.
            assert!(file.read_or_create().is_err());
        }
        fs::set_permissions(&path, Permissions::from_mode(0o400)).expect("chmod");
        let id = file.read().expect("read-only for the owner is fine").id();

        // Hex (as restored from a written-down back-up) reads as the same key.
        let raw = fs::read(&path).expect("read");
        let hex_path = dir.path().join("hex.key");
        fs::write(&hex_path, format!("{}\n", hex::encode(&raw))).expect("write");
        fs::set_permissions(&hex_path, Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(KeyFile::new(&hex_path).read().expect("hex key").id(), id);

        for bad in [&b""[..], &[1u8; 31], &[1u8; 33], b"not hex at all, not 32 bytes either"] {
            fs::write(&hex_path, bad).expect("write");
            assert!(matches!(KeyFile::new(&hex_path).read(), Err(KeyError::Malformed { .. })), "{bad:?}");
        }
        assert!(matches!(
            KeyFile::new(dir.path()).read(),
            Err(KeyError::NotAFile { .. } | KeyError::NotPrivate { .. })
        ));
    }
}
