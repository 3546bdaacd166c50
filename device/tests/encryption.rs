//! The gallery's encryption at rest through the `autograph` binary: where the key is created,
//! refusal (exit 2, file untouched) of a wrong or missing key, a shared key file, a tampered or
//! truncated gallery, and a plain gallery until `gallery encrypt`; `gallery rekey`.

mod common;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use autograph_device::crypt::{self, KeyFile};
use autograph_shared::manifest::Manifest;
use common::{Run, Writer, assert_keys, autograph_with, signature_file, write_bundle};

/// A bundle, a gallery in its own directory, a key file in another, and images.
struct Site {
    dir: tempfile::TempDir,
    bundle: PathBuf,
    gallery: PathBuf,
    key: PathBuf,
    images: PathBuf,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let bundle = dir.path().join("bundle");
        write_bundle(&bundle, 1);
        for sub in ["kiosk", "images"] {
            std::fs::create_dir(dir.path().join(sub)).expect("dir");
        }
        Self {
            bundle,
            gallery: dir.path().join("kiosk/gallery.bin"),
            key: dir.path().join("keys/gallery.key"),
            images: dir.path().join("images"),
            dir,
        }
    }

    fn sig(&self, writer: u64, sample: u64) -> PathBuf {
        signature_file(&self.images, &format!("w{writer}-s{sample}"), &Writer::new(writer), sample)
    }

    /// `autograph <command> <rest> --json --bundle B --gallery G --gallery-key KEY` (`gallery
    /// encrypt` and `rekey` take no bundle; `rest` may be the value of the command's last option).
    fn run_with_key(&self, key: &Path, command: &[&str], rest: &[&Path]) -> Run {
        let mut args: Vec<OsString> = command.iter().map(Into::into).collect();
        args.extend(rest.iter().map(|p| p.as_os_str().to_owned()));
        args.push("--json".into());
        if !matches!(command, ["gallery", "encrypt" | "rekey", ..]) {
            args.extend(["--bundle".into(), self.bundle.clone().into()]);
        }
        args.extend(["--gallery".into(), self.gallery.clone().into(), "--gallery-key".into(), key.into()]);
        autograph_with(args, |_| {})
    }

    fn run(&self, command: &[&str], rest: &[&Path]) -> Run {
        self.run_with_key(&self.key, command, rest)
    }

    fn enroll(&self, user: &str, writer: u64) -> Run {
        let files = [self.sig(writer, 0), self.sig(writer, 1)];
        self.run(&["enroll", "--user", user], &[&files[0], &files[1]])
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.gallery).expect("read the gallery")
    }

    /// Every command that reads or writes the gallery, with its arguments.
    fn commands(&self) -> Vec<(Vec<&'static str>, Vec<PathBuf>)> {
        let probe = self.sig(1, 20);
        vec![
            (vec!["verify", "--user", "alice"], vec![probe.clone()]),
            (vec!["identify"], vec![probe.clone()]),
            (vec!["enroll", "--user", "bob"], vec![self.sig(2, 0)]),
            (vec!["gallery", "list"], vec![]),
            (vec!["gallery", "remove", "--user", "alice"], vec![]),
            (vec!["gallery", "export"], vec![self.images.join("copy.bin")]),
            (vec!["gallery", "import", "--replace"], vec![self.gallery.clone()]),
            (vec!["gallery", "encrypt"], vec![]),
            (vec!["gallery", "rekey", "--new-key"], vec![self.dir.path().join("keys/rotated.key")]),
        ]
    }

    /// Asserts that every command refuses the gallery with exit 2, a message naming the gallery
    /// and containing each of `words`, and leaves the file as it was (and creates no key).
    fn assert_all_refused(&self, key: &Path, words: &[&str]) {
        let before = self.bytes();
        for (command, rest) in self.commands() {
            let rest: Vec<&Path> = rest.iter().map(PathBuf::as_path).collect();
            let run = self.run_with_key(key, &command, &rest);
            assert_eq!(run.code, 2, "{command:?}: {run:?}");
            assert_eq!(run.json()["status"], "error", "{command:?}");
            assert!(run.stderr.contains("gallery.bin"), "{command:?}: {run:?}");
            for word in words {
                assert!(run.stderr.contains(word), "{command:?} should say {word:?}: {run:?}");
            }
            assert_eq!(self.bytes(), before, "{command:?} left the gallery as it was");
            assert!(!self.images.join("copy.bin").exists() && !self.dir.path().join("keys/rotated.key").exists());
        }
        // `gallery check` reports damage (exit 1) but cannot check with a wrong key (exit 2).
        let run = self.run_with_key(key, &["gallery", "check"], &[]);
        assert!(run.code == 1 || run.code == 2, "{run:?}");
        assert_eq!(self.bytes(), before);
    }
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn first_enrolment_creates_a_private_key_in_the_default_location() {
    let s = Site::new();
    let files = [s.sig(1, 0)];
    let enroll = |gallery: &Path, env: &[(&str, Option<&Path>)]| {
        let mut args: Vec<OsString> = ["enroll", "--json", "--user", "alice", "--bundle"].map(Into::into).to_vec();
        args.extend([s.bundle.clone().into(), "--gallery".into(), gallery.into(), files[0].clone().into()]);
        autograph_with(args, |cmd| {
            cmd.env_remove("AUTOGRAPH_GALLERY_KEY").env_remove("XDG_CONFIG_HOME").env_remove("HOME");
            for (name, value) in env {
                if let Some(value) = value {
                    cmd.env(name, value);
                }
            }
        })
    };

    // $XDG_CONFIG_HOME/autograph/gallery.key, private, in a private directory.
    let config = s.dir.path().join("config");
    let run = enroll(&s.gallery, &[("XDG_CONFIG_HOME", Some(&config)), ("HOME", Some(&s.dir.path().join("home")))]);
    assert_eq!(run.code, 0, "{run:?}");
    let key = config.join("autograph/gallery.key");
    assert_eq!(std::fs::read(&key).expect("key").len(), crypt::KEY_LEN);
    assert_eq!((mode_of(&key), mode_of(key.parent().expect("dir"))), (0o600, 0o700));
    assert!(s.bytes().starts_with(&crypt::MAGIC));
    assert!(!s.dir.path().join("home").exists(), "XDG_CONFIG_HOME comes first");
    // The same key opens it again.
    let list = s.run_with_key(&key, &["gallery", "list"], &[]);
    assert_eq!((list.code, list.json()["writers"][0]["user"].as_str()), (0, Some("alice")), "{list:?}");

    // Without XDG_CONFIG_HOME: ~/.config/autograph/gallery.key.
    let home = s.dir.path().join("home");
    let other = s.dir.path().join("kiosk/other.bin");
    let run = enroll(&other, &[("HOME", Some(&home))]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(mode_of(&home.join(".config/autograph/gallery.key")), 0o600);

    // Neither: no guessing, the operator must say where the key is.
    let run = enroll(&s.dir.path().join("kiosk/third.bin"), &[]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("--gallery-key") && run.stderr.contains("AUTOGRAPH_GALLERY_KEY"), "{run:?}");

    // The default key is never put beside the gallery.
    let beside = config.join("autograph/gallery.bin");
    let run = enroll(&beside, &[("XDG_CONFIG_HOME", Some(&config))]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("gallery's own directory"), "{run:?}");
    assert!(!beside.exists());
}

#[test]
fn wrong_missing_or_shared_key_is_refused_and_nothing_changes() {
    let s = Site::new();
    assert_eq!(s.enroll("alice", 1).code, 0);
    let right = KeyFile::new(&s.key).read().expect("key").id();

    // Another key: both key ids and the key file are named.
    let other = s.dir.path().join("keys/other.key");
    KeyFile::new(&other).read_or_create().expect("other key");
    s.assert_all_refused(&other, &["encrypted under key", &right.to_string(), "other.key"]);

    // A missing key file: no new key is made for a gallery that has one.
    let missing = s.dir.path().join("keys/lost.key");
    s.assert_all_refused(&missing, &["does not exist", "back-up", &right.to_string()]);
    assert!(!missing.exists());

    // A key file others can read.
    std::fs::set_permissions(&s.key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    s.assert_all_refused(&s.key, &["chmod 600"]);
    std::fs::set_permissions(&s.key, std::fs::Permissions::from_mode(0o600)).expect("chmod");

    // The right key still works, and `check` names it.
    let run = s.run(&["gallery", "check"], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["key_id"], right.to_string());
    let run = s.run(&["gallery", "check"], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = s.run_with_key(&other, &["gallery", "check"], &[]);
    assert_eq!(run.code, 2, "a wrong key is not damage: {run:?}");
}

#[test]
fn tampered_or_truncated_gallery_is_refused_and_nothing_changes() {
    let s = Site::new();
    assert_eq!(s.enroll("alice", 1).code, 0);
    let good = s.bytes();
    let header = crypt::HEADER_LEN;
    for (what, damaged, words) in [
        ("a flipped bit in the body", flip(&good, header + 40), vec!["authentication failed"]),
        ("a flipped bit in the nonce", flip(&good, 25), vec!["authentication failed"]),
        ("a flipped bit in the last byte", flip(&good, good.len() - 1), vec!["authentication failed"]),
        ("a flipped bit in the key id", flip(&good, 13), vec!["encrypted under key"]),
        ("truncated", good[..good.len() - 7].to_vec(), vec!["truncated"]),
        ("cut in the header", good[..20].to_vec(), vec!["truncated"]),
        ("empty", Vec::new(), vec!["truncated"]),
    ] {
        std::fs::write(&s.gallery, &damaged).expect("damage");
        s.assert_all_refused(&s.key, &words);
        let check = s.run(&["gallery", "check"], &[]);
        if what != "a flipped bit in the key id" {
            assert_eq!((check.code, check.json()["ok"].as_bool()), (1, Some(false)), "{what}: {check:?}");
        }
    }
    std::fs::write(&s.gallery, &good).expect("restore");
    assert_eq!(s.run(&["verify", "--user", "alice"], &[&s.sig(1, 21)]).code, 0);
}

fn flip(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[at] ^= 0x04;
    out
}

#[test]
fn plain_gallery_is_refused_until_gallery_encrypt() {
    let s = Site::new();
    assert_eq!(s.enroll("alice", 1).code, 0);
    assert_eq!(s.enroll("bob", 2).code, 0);
    // What an older autograph wrote: the same gallery, not encrypted.
    let key = KeyFile::new(&s.key).read().expect("key");
    let plain = crypt::open(&key, &s.bytes()).expect("decrypt");
    std::fs::write(&s.gallery, &plain).expect("write plain gallery");
    std::fs::remove_file(&s.key).expect("no key yet, as on an older kiosk");

    for (command, rest) in s.commands() {
        if command.starts_with(&["gallery", "encrypt"]) {
            continue;
        }
        let rest: Vec<&Path> = rest.iter().map(PathBuf::as_path).collect();
        let run = s.run(&command, &rest);
        assert_eq!(run.code, 2, "{command:?}: {run:?}");
        assert!(run.stderr.contains("not encrypted") && run.stderr.contains("autograph gallery encrypt"), "{run:?}");
        assert_eq!(s.bytes(), plain, "{command:?} left the plain gallery as it was");
    }
    assert!(!s.key.exists(), "refusing creates no key");

    let run = s.run(&["gallery", "encrypt"], &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let j = run.json();
    assert_keys(
        &j,
        &["command", "gallery", "key_file", "key_id", "created_key", "already_encrypted", "version", "writers"],
    );
    assert_eq!((j["created_key"].as_bool(), j["already_encrypted"].as_bool()), (Some(true), Some(false)));
    assert_eq!(j["writers"], 2);
    assert_eq!(mode_of(&s.key), 0o600);
    assert_eq!(mode_of(&s.gallery), 0o600);
    let key = KeyFile::new(&s.key).read().expect("key");
    assert_eq!(j["key_id"], key.id().to_string());
    assert_eq!(crypt::open(&key, &s.bytes()).expect("decrypt").as_slice(), plain.as_slice(), "kept exactly");
    let text = s.run_with_key(&s.key, &["gallery", "encrypt"], &[]);
    assert_eq!(text.json()["already_encrypted"], true, "{text:?}");
    assert_eq!(s.run(&["verify", "--user", "bob"], &[&s.sig(2, 22)]).code, 0);

    // A damaged plain gallery is not encrypted.
    let damaged = flip(&plain, plain.len() / 2);
    std::fs::write(&s.gallery, &damaged).expect("write");
    let run = s.run(&["gallery", "encrypt"], &[]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("checksum"), "{run:?}");
    assert_eq!(s.bytes(), damaged);
}

#[test]
fn rekey_moves_the_gallery_to_another_key() {
    let s = Site::new();
    assert_eq!(s.enroll("alice", 1).code, 0);
    let old = KeyFile::new(&s.key).read().expect("key").id();
    let new_key = s.dir.path().join("keys/2027.key");

    let run = s.run(&["gallery", "rekey", "--new-key"], &[&new_key]);
    assert_eq!(run.code, 0, "{run:?}");
    let j = run.json();
    assert_keys(
        &j,
        &["command", "gallery", "old_key_file", "old_key_id", "new_key_file", "new_key_id", "created_key", "writers"],
    );
    assert_eq!((j["old_key_id"].as_str(), j["created_key"].as_bool()), (Some(old.to_string().as_str()), Some(true)));
    assert_eq!(mode_of(&new_key), 0o600);

    let probe = s.sig(1, 23);
    let run = s.run(&["verify", "--user", "alice"], &[&probe]);
    assert_eq!(run.code, 2, "the old key no longer opens it: {run:?}");
    assert!(run.stderr.contains("encrypted under key"), "{run:?}");
    let run = s.run_with_key(&new_key, &["verify", "--user", "alice"], &[&probe]);
    assert_eq!(run.code, 0, "{run:?}");

    // Rekeying to the current key is refused and writes nothing.
    let before = s.bytes();
    let run = s.run_with_key(&new_key, &["gallery", "rekey", "--new-key"], &[&new_key]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("current key"), "{run:?}");
    assert_eq!(s.bytes(), before);
    // Back to the first (existing) key.
    let run = s.run_with_key(&new_key, &["gallery", "rekey", "--new-key"], &[&s.key]);
    assert_eq!((run.code, run.json()["created_key"].as_bool()), (0, Some(false)), "{run:?}");
    assert_eq!(s.run(&["verify", "--user", "alice"], &[&probe]).code, 0);
}

/// `export` writes a copy under the same key; a copy of the gallery's directory is useless
/// without the key file, which is elsewhere.
#[test]
fn exported_copy_is_encrypted_under_the_same_key() {
    let s = Site::new();
    assert_eq!(s.enroll("alice", 1).code, 0);
    let copy = s.images.join("backup.bin");
    assert_eq!(s.run(&["gallery", "export"], &[&copy]).code, 0);
    let bytes = std::fs::read(&copy).expect("read");
    assert!(bytes.starts_with(&crypt::MAGIC));
    assert_eq!(crypt::key_id_of(&bytes), Ok(KeyFile::new(&s.key).read().expect("key").id()));
    assert!(!bytes.windows(5).any(|w| w == b"alice"), "no writer id in clear");
    let identity = Manifest::load(&s.bundle).expect("manifest").model_identity();
    let g = autograph_device::store::load(
        &autograph_device::store::GalleryFile::new(&copy, KeyFile::new(&s.key)),
        Some(&identity),
    )
    .expect("the copy loads with the key");
    assert!(g.contains("alice"));
}
