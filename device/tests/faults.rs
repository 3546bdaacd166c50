//! Faults during enrolment into an encrypted gallery, through the `autograph` binary:
//!
//! * `kill -9` at random points of `autograph enroll`, in a loop: the gallery always loads and
//!   holds every enrolment that was reported done; a killed enrolment is all there or absent.
//!   A few iterations run with the tests; `scripts/fault-kill9 [ITERATIONS]` runs more.
//! * A full disk: the write of the new gallery fails (`ulimit -f`, which any user can set; and a
//!   real full tmpfs where a mount namespace can be made, i.e. as root with `unshare`).
//! * A read-only gallery directory (`chmod` for a normal user; for root, whom `chmod` does not
//!   stop, a read-only bind mount in a mount namespace; skipped, saying so, when neither works).
//!
//! Each failure must exit non-zero with a message naming the gallery and the cause, leave the
//! previous gallery byte for byte, loadable, and leave no temporary file behind.

mod common;

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use autograph_device::store;
use autograph_shared::gallery::{EMBEDDING_DIM, KioskGallery, Template};
use autograph_shared::manifest::Manifest;
use common::{Run, Writer, autograph_command, gallery_file, run_output, signature_file, write_bundle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Iterations of the kill -9 loop with the tests (`AUTOGRAPH_FAULT_ITERATIONS` sets more).
const DEFAULT_KILL_ITERATIONS: usize = 6;
/// Writers in the gallery before the kill -9 loop: a large file, so that kills land in saves.
const PREFILLED_WRITERS: usize = 900;

/// A bundle, a gallery (encrypted under the tests' key) in its own directory, and two images.
struct Site {
    _dir: tempfile::TempDir,
    bundle: PathBuf,
    kiosk: PathBuf,
    gallery: PathBuf,
    images: [PathBuf; 2],
    identity: [u8; 32],
}

impl Site {
    /// With `writers` writers of random templates already enrolled.
    fn new(writers: usize) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let bundle = dir.path().join("bundle");
        write_bundle(&bundle, 1);
        let kiosk = dir.path().join("kiosk");
        std::fs::create_dir(&kiosk).expect("kiosk dir");
        let images = [0, 1].map(|s| signature_file(dir.path(), &format!("s{s}"), &Writer::new(1), s));
        let identity = Manifest::load(&bundle).expect("manifest").model_identity();
        let site = Self { gallery: kiosk.join("gallery.bin"), kiosk, bundle, images, identity, _dir: dir };
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut g = KioskGallery::new_boxed();
        for w in 0..writers {
            let templates: Vec<Template> =
                (0..KioskGallery::TEMPLATE_CAPACITY).map(|_| random_template(&mut rng)).collect();
            g.enroll(&format!("old-{w:04}"), &templates, 0, false).expect("enroll");
        }
        store::save(&gallery_file(&site.gallery), &g, &identity).expect("save");
        site
    }

    /// `autograph enroll --json --bundle B --gallery G --user USER IMAGES`.
    fn enroll_args(&self, user: &str) -> Vec<OsString> {
        let mut args: Vec<OsString> = ["enroll", "--json", "--user", user, "--bundle"].map(OsString::from).to_vec();
        args.extend([self.bundle.clone().into(), "--gallery".into(), self.gallery.clone().into()]);
        args.extend(self.images.iter().map(|p| p.clone().into_os_string()));
        args
    }

    fn load(&self) -> Result<Box<KioskGallery>, store::StoreError> {
        store::load(&gallery_file(&self.gallery), Some(&self.identity))
    }

    fn temp_files(&self) -> Vec<PathBuf> {
        temp_files(&self.kiosk)
    }
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().contains(".tmp-")))
        .collect()
}

fn random_template(rng: &mut ChaCha8Rng) -> Template {
    let v: Vec<f32> = (0..EMBEDDING_DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Template::from_embedding(&v).expect("non-zero")
}

/// The program and leading arguments that run `autograph` (an emulator first under
/// `AUTOGRAPH_TEST_RUNNER`), for wrapping in a shell.
fn autograph_argv() -> Vec<OsString> {
    let runner = std::env::var("AUTOGRAPH_TEST_RUNNER").unwrap_or_default();
    runner.split_whitespace().map(OsString::from).chain([env!("CARGO_BIN_EXE_autograph").into()]).collect()
}

/// `sh -c SCRIPT sh ARGS... AUTOGRAPH... AUTOGRAPH_ARGS...` with the environment [`autograph`]
/// sets: the script ends by running `"$@"` (after shifting its own `ARGS`).
fn sh_autograph(script: &str, args: &[&Path], autograph_args: &[OsString]) -> Run {
    // The environment of common::autograph_command, on a shell instead.
    let reference = autograph_command(Vec::<OsString>::new());
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).arg("sh").args(args).args(autograph_argv()).args(autograph_args);
    for (name, value) in reference.get_envs() {
        match value {
            Some(value) => cmd.env(name, value),
            None => cmd.env_remove(name),
        };
    }
    run_output(cmd.output().expect("run sh"))
}

/// Asserts that the gallery is `before` byte for byte, loads, and has no temporary file beside.
fn assert_intact(site: &Site, before: &[u8], what: &str) {
    assert_eq!(std::fs::read(&site.gallery).expect("read"), before, "{what}: the gallery changed");
    let g = site.load().unwrap_or_else(|e| panic!("{what}: the gallery does not load: {e}"));
    assert!(!g.contains("newcomer"), "{what}");
    assert!(site.temp_files().is_empty(), "{what}: temporary files left: {:?}", site.temp_files());
}

/// Asserts that a failed enrolment exited 2 with a JSON error naming the gallery and `cause`.
fn assert_failed_cleanly(run: &Run, cause: &str, what: &str) {
    assert_eq!(run.code, 2, "{what}: {run:?}");
    assert_eq!(run.json()["status"], "error", "{what}");
    assert!(run.stderr.contains("gallery.bin") && run.stderr.contains(cause), "{what}: {run:?}");
    // Shown with --nocapture: what the operator reads.
    eprintln!("{what}: exit {}: {}", run.code, run.stderr.trim());
}

/// What one `kill -9` loop saw.
#[derive(Debug, Default)]
struct KillStats {
    iterations: usize,
    finished: usize,
    killed: usize,
    killed_in_save: usize,
    landed_despite_kill: usize,
    corrupt: usize,
}

/// `autograph enroll` killed with SIGKILL after a random delay, over and over; after each
/// round the gallery must load, keep every writer it had, hold the new writer if its enrolment
/// was reported done, and hold it whole or not at all if it was killed.
#[test]
fn kill9_during_enrolment_never_corrupts_the_gallery() {
    let iterations = std::env::var("AUTOGRAPH_FAULT_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_KILL_ITERATIONS);
    let seed = std::env::var("AUTOGRAPH_FAULT_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
    });
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let site = Site::new(PREFILLED_WRITERS);

    // How long an enrolment takes here (the median of three): the kills are spread over that
    // time and a bit beyond.
    let mut durations: Vec<Duration> = (0..3)
        .map(|n| {
            let started = Instant::now();
            let run = common::autograph(site.enroll_args(&format!("calibration-{n}")));
            assert_eq!(run.code, 0, "{run:?}");
            started.elapsed()
        })
        .collect();
    durations.sort();
    let duration = durations[1];

    let mut stats = KillStats::default();
    for i in 0..iterations {
        let mut before = site.load().expect("the gallery loads before the round");
        if before.len() + 1 >= KioskGallery::WRITER_CAPACITY {
            store::update(&gallery_file(&site.gallery), &site.identity, |g| {
                let new: Vec<String> =
                    g.writers().map(|w| w.id().to_string()).filter(|id| id.starts_with("k-")).collect();
                for id in &new {
                    g.remove(id);
                }
                Ok::<_, store::StoreError>(())
            })
            .expect("make room");
            before = site.load().expect("load");
        }
        let user = format!("k-{i:06}");
        let mut child = autograph_command(site.enroll_args(&user))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn autograph enroll");
        // Half the kills anywhere in the enrolment, half around its end, where the save is.
        let at = if rng.random_bool(0.5) { rng.random_range(0.0..1.3) } else { rng.random_range(0.75..1.05) };
        let delay = duration.mul_f64(at);
        // Poll rather than sleep, so that a quick enrolment is reaped as finished.
        let deadline = Instant::now() + delay;
        while Instant::now() < deadline && child.try_wait().expect("try_wait").is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = child.kill(); // SIGKILL; a no-op when it has exited already
        let status = child.wait().expect("reap");
        let mut stdout = String::new();
        if let Some(mut out) = child.stdout.take() {
            let _ = out.read_to_string(&mut stdout);
        }
        stats.iterations += 1;
        let killed = status.signal() == Some(9);
        if killed {
            stats.killed += 1;
            stats.killed_in_save += usize::from(!site.temp_files().is_empty());
        } else {
            assert!(status.success(), "iteration {i}: enrol failed: {status:?} {stdout}");
            stats.finished += 1;
        }

        let after = match site.load() {
            Ok(g) => g,
            Err(e) => {
                stats.corrupt += 1;
                eprintln!("iteration {i}: the gallery does not load after kill -9: {e}");
                break;
            }
        };
        // Every writer there before is there, unchanged.
        let kept = before.writers().all(|w| after.get(w.id()) == Some(w));
        let new = after.get(&user);
        let whole = new.is_none_or(|w| w.templates().len() == 2);
        let nothing_else = after.len() == before.len() + usize::from(new.is_some());
        if !(kept && whole && nothing_else && (killed || new.is_some())) {
            stats.corrupt += 1;
            eprintln!(
                "iteration {i}: wrong gallery after {}: kept {kept}, new writer whole {whole}, nothing else \
                 {nothing_else}, new writer present {}",
                if killed { "kill -9" } else { "a finished enrolment" },
                new.is_some()
            );
            break;
        }
        stats.landed_despite_kill += usize::from(killed && new.is_some());
    }
    // Leftover temporary files are removed by the next save; a check through the binary.
    let run = common::autograph(site.enroll_args("final"));
    assert_eq!(run.code, 0, "{run:?}");
    assert!(site.temp_files().is_empty(), "stale temporary files are cleaned up");
    let KillStats { iterations, finished, killed, killed_in_save, landed_despite_kill, corrupt } = stats;
    eprintln!(
        "fault-kill9: {iterations} iterations (seed {seed}, enrolment {:.0} ms, gallery {} writers): {killed} killed \
         ({killed_in_save} inside a save, {landed_despite_kill} landed anyway), {finished} finished; \
         {corrupt} corrupt galleries",
        duration.as_secs_f64() * 1e3,
        PREFILLED_WRITERS,
    );
    assert_eq!(corrupt, 0, "kill -9 corrupted the gallery");
}

/// A write that fails for lack of space: `ulimit -f` makes every write beyond the limit fail
/// with EFBIG (SIGXFSZ ignored, as a daemon would), for any user. Where a mount namespace can be
/// made, a real tmpfs that is full fails with ENOSPC too.
#[test]
fn full_disk_fails_cleanly_and_keeps_the_gallery() {
    let site = Site::new(300);
    let before = std::fs::read(&site.gallery).expect("read");
    assert!(before.len() > 200_000, "the gallery is larger than the limit: {}", before.len());

    let run = sh_autograph(r#"trap "" XFSZ; ulimit -f 128 || exit 99; exec "$@""#, &[], &site.enroll_args("newcomer"));
    assert_failed_cleanly(&run, "File too large", "ulimit -f");
    assert!(run.stderr.contains("cannot save gallery file") && run.stderr.contains("left as it was"), "{run:?}");
    assert_intact(&site, &before, "ulimit -f");

    if !can_unshare() {
        eprintln!("skipped the full tmpfs: no mount namespace here (needs root and unshare -m)");
        return;
    }
    // The kiosk directory on a small tmpfs, filled up; what is left in it is copied out after.
    let out = site.kiosk.with_file_name("after-full-tmpfs");
    std::fs::create_dir(&out).expect("out dir");
    let script = r#"
        kiosk="$1"; out="$2"; shift 2
        cp -a "$kiosk/." "$out/" || exit 98
        mount -t tmpfs -o size=1m,mode=700 tmpfs "$kiosk" || exit 97
        cp -a "$out/." "$kiosk/" || exit 96
        dd if=/dev/zero of="$kiosk/filler" bs=4k 2>/dev/null
        "$@"; rc=$?
        rm -f "$kiosk/filler"
        rm -rf "$out" && mkdir "$out" && cp -a "$kiosk/." "$out/" || exit 95
        exit $rc"#;
    let run = sh_autograph_unshared(script, &[&site.kiosk, &out], &site.enroll_args("newcomer"));
    assert_failed_cleanly(&run, "No space left on device", "full tmpfs");
    assert_eq!(std::fs::read(out.join("gallery.bin")).expect("read"), before, "full tmpfs: the gallery changed");
    assert!(temp_files(&out).is_empty(), "full tmpfs: temporary files left: {:?}", temp_files(&out));
    let g = store::load(&gallery_file(&out.join("gallery.bin")), Some(&site.identity)).expect("loads");
    assert!(!g.contains("newcomer"));
    assert_intact(&site, &before, "full tmpfs (the directory under it)");
}

/// Enrolment into a gallery whose directory cannot be written fails cleanly.
#[test]
fn read_only_directory_fails_cleanly_and_keeps_the_gallery() {
    let site = Site::new(3);
    let before = std::fs::read(&site.gallery).expect("read");

    // A normal user: chmod is enough. Root is not stopped by it (checked by writing a probe).
    std::fs::set_permissions(&site.kiosk, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    let probe = site.kiosk.join("probe");
    let chmod_works = std::fs::write(&probe, b"x").is_err();
    let _ = std::fs::remove_file(&probe);
    if chmod_works {
        let run = common::autograph(site.enroll_args("newcomer"));
        std::fs::set_permissions(&site.kiosk, std::fs::Permissions::from_mode(0o755)).expect("chmod back");
        assert_failed_cleanly(&run, "Permission denied", "chmod 555");
        assert!(run.stderr.contains("cannot save gallery file"), "{run:?}");
        assert_intact(&site, &before, "chmod 555");
        return;
    }
    std::fs::set_permissions(&site.kiosk, std::fs::Permissions::from_mode(0o755)).expect("chmod back");
    if !can_unshare() {
        eprintln!(
            "skipped: running as root (chmod does not stop root) without a mount namespace for a read-only \
             bind mount (needs unshare -m)"
        );
        return;
    }
    let script = r#"kiosk="$1"; shift
        mount --bind "$kiosk" "$kiosk" && mount -o remount,ro,bind "$kiosk" || exit 97
        exec "$@""#;
    let run = sh_autograph_unshared(script, &[&site.kiosk], &site.enroll_args("newcomer"));
    assert_failed_cleanly(&run, "Read-only file system", "read-only bind mount");
    assert_intact(&site, &before, "read-only bind mount");
}

/// Whether this process may make a mount namespace and mount in it.
fn can_unshare() -> bool {
    Command::new("unshare")
        .args(["-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// [`sh_autograph`] inside a new mount namespace (`unshare -m`), whose mounts vanish with it.
fn sh_autograph_unshared(script: &str, args: &[&Path], autograph_args: &[OsString]) -> Run {
    let wrapped = format!(r#"exec unshare -m sh -c '{}' sh "$@""#, script.replace('\'', r#"'\''"#));
    sh_autograph(&wrapped, args, autograph_args)
}
