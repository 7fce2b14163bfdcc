//! The file system mounted for real: what a power cut keeps and what it loses.
//!
//! Needs `/dev/fuse` and root. Where the machine cannot mount FUSE file systems each test says
//! so and passes, unless `LOSSYFS_REQUIRE_FUSE` is set (`.ci/run` sets it, so CI cannot skip).

#![allow(clippy::unwrap_used)]

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use lepus_lossyfs::{CutMode, LossyFs, Mounted};

/// A backing directory and a mount point under the temp dir, removed at the end.
struct Setup {
    base: PathBuf,
    fs: Option<Mounted>,
}

impl Setup {
    fn mnt(&self) -> &Path {
        self.fs.as_ref().unwrap().mountpoint()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.mnt().join(name)
    }

    fn cut(&mut self, mode: CutMode) -> lepus_lossyfs::CutReport {
        self.fs.as_mut().unwrap().power_cut(mode).unwrap()
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(fs) = self.fs.take() {
            let _ = fs.unmount();
        }
        let _ = fs::remove_dir_all(&self.base);
    }
}

fn mount(name: &str) -> Option<Setup> {
    static N: AtomicU32 = AtomicU32::new(0);
    let base = std::env::temp_dir().join(format!(
        "lossyfs-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let (backing, mnt) = (base.join("backing"), base.join("mnt"));
    fs::create_dir_all(&backing).unwrap();
    fs::create_dir_all(&mnt).unwrap();
    match LossyFs::new(&backing).mount(&mnt) {
        Ok(fs) => Some(Setup { base, fs: Some(fs) }),
        Err(e) if e.is_unsupported() && std::env::var_os("LOSSYFS_REQUIRE_FUSE").is_none() => {
            eprintln!("SKIPPED: this machine cannot mount FUSE file systems ({e})");
            let _ = fs::remove_dir_all(&base);
            None
        }
        Err(e) => panic!("mount: {e}"),
    }
}

fn sync_dir(dir: &Path) {
    File::open(dir).unwrap().sync_all().unwrap();
}

/// Creates `name` with `contents`, fsyncs it and its directory: fully durable.
fn durable_file(dir: &Path, name: &str, contents: &[u8]) {
    let mut f = File::create(dir.join(name)).unwrap();
    f.write_all(contents).unwrap();
    f.sync_all().unwrap();
    sync_dir(dir);
}

/// The root's entry changes of the two entry tests, the root not fsynced after them: from a
/// durable `config` ("old") and `doomed` ("still here"), a new directory `dir` whose own entry
/// `inner` ("kept") is durable, `config` replaced by write-temp + fsync + rename ("new"), and
/// `doomed` unlinked. Four entry changes in the root: `dir`, `config.tmp`, the rename, the
/// unlink.
fn change_root_entries(s: &Setup) {
    durable_file(s.mnt(), "config", b"old");
    durable_file(s.mnt(), "doomed", b"still here");
    fs::create_dir(s.path("dir")).unwrap();
    durable_file(&s.path("dir"), "inner", b"kept");
    let mut tmp = File::create(s.path("config.tmp")).unwrap();
    tmp.write_all(b"new").unwrap();
    tmp.sync_all().unwrap();
    drop(tmp);
    fs::rename(s.path("config.tmp"), s.path("config")).unwrap();
    fs::remove_file(s.path("doomed")).unwrap();
}

#[test]
fn unsynced_writes_vanish_and_synced_ones_survive() {
    let Some(mut s) = mount("data") else { return };
    let mnt = s.mnt().to_owned();
    durable_file(&mnt, "log", b"synced|");
    let f = OpenOptions::new().write(true).open(s.path("log")).unwrap();
    f.write_all_at(b"appended, not synced", 7).unwrap();
    f.write_all_at(b"XX", 0).unwrap();
    assert_eq!(
        fs::read(s.path("log")).unwrap(),
        b"XXnced|appended, not synced"
    );
    let unsynced = s.fs.as_ref().unwrap().unsynced();
    assert_eq!(
        (unsynced.files, unsynced.data_ops, unsynced.bytes),
        (1, 2, 22)
    );
    drop(f);

    let report = s.cut(CutMode::DropUnsynced);
    assert_eq!(fs::read(s.path("log")).unwrap(), b"synced|");
    assert_eq!((report.data_ops_dropped, report.bytes_dropped), (2, 22));
    assert_eq!(s.fs.as_ref().unwrap().unsynced().data_ops, 0);

    // Synced after the cut: survives the next one; a truncate not synced is undone.
    let f = OpenOptions::new().write(true).open(s.path("log")).unwrap();
    f.write_all_at(b"more", 7).unwrap();
    f.sync_data().unwrap();
    f.set_len(3).unwrap();
    drop(f);
    s.cut(CutMode::DropUnsynced);
    assert_eq!(fs::read(s.path("log")).unwrap(), b"synced|more");
}

#[test]
fn unsynced_directory_entries_vanish() {
    let Some(mut s) = mount("entries") else {
        return;
    };
    let mnt = s.mnt().to_owned();
    change_root_entries(&s);
    // A fifth: a new file, its data fsynced but not its directory.
    let mut f = File::create(s.path("new")).unwrap();
    f.write_all(b"data").unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(fs::read(s.path("config")).unwrap(), b"new");
    assert_eq!(s.fs.as_ref().unwrap().unsynced().entries, 5);

    let report = s.cut(CutMode::DropUnsynced);
    assert_eq!(report.entries_undone, 5);
    assert!(!s.path("new").exists());
    assert!(!s.path("dir").exists());
    assert!(!s.path("config.tmp").exists());
    assert_eq!(fs::read(s.path("config")).unwrap(), b"old");
    assert_eq!(fs::read(s.path("doomed")).unwrap(), b"still here");
    let mut names: Vec<_> = fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["config", "doomed"]);
}

#[test]
fn synced_directory_entries_survive() {
    let Some(mut s) = mount("synced-entries") else {
        return;
    };
    change_root_entries(&s);
    sync_dir(s.mnt());

    let report = s.cut(CutMode::DropUnsynced);
    assert_eq!((report.entries_undone, report.data_ops_dropped), (0, 0));
    assert_eq!(fs::read(s.path("config")).unwrap(), b"new");
    assert_eq!(fs::read(s.path("dir/inner")).unwrap(), b"kept");
    assert!(!s.path("doomed").exists());
    assert!(!s.path("config.tmp").exists());
}

#[test]
fn an_unlinked_file_still_open_comes_back_as_it_was_synced() {
    let Some(mut s) = mount("open-unlinked") else {
        return;
    };
    let mnt = s.mnt().to_owned();
    durable_file(&mnt, "segment", b"durable");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(s.path("segment"))
        .unwrap();
    fs::remove_file(s.path("segment")).unwrap();
    // Still readable and writable through the open descriptor.
    f.write_all_at(b"+late", 7).unwrap();
    let mut buf = [0; 12];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"durable+late");
    drop(f);
    s.cut(CutMode::DropUnsynced);
    assert_eq!(fs::read(s.path("segment")).unwrap(), b"durable");
}

/// Torn mode: each cut keeps a prefix of the unsynced writes and tears the next one inside
/// itself, never beyond it. (The kernel hands writes over split at page boundaries, so the
/// unit kept or torn is one such piece.)
#[test]
fn torn_mode_keeps_a_prefix_and_tears_inside_the_next_write() {
    let Some(mut s) = mount("torn") else { return };
    let mnt = s.mnt().to_owned();
    const HEADER: &[u8] = b"HEADER--";
    const WRITES: usize = 6;
    const LEN: usize = 1000;
    let stream: Vec<u8> = (0..WRITES * LEN).map(|i| b'a' + (i / LEN) as u8).collect();
    let (mut torn, mut zero_filled, mut cut_short, mut kept_counts) = (0, 0, 0, Vec::new());
    for seed in 0..40u64 {
        durable_file(&mnt, "log", HEADER);
        let f = OpenOptions::new().write(true).open(s.path("log")).unwrap();
        for (i, chunk) in stream.chunks(LEN).enumerate() {
            f.write_all_at(chunk, (HEADER.len() + i * LEN) as u64)
                .unwrap();
        }
        drop(f);
        let report = s.cut(CutMode::TornPrefix { seed });
        let after = fs::read(s.path("log")).unwrap();
        assert!(after.starts_with(HEADER), "seed {seed}: synced bytes lost");
        let body = &after[HEADER.len()..];
        kept_counts.push(report.data_ops_kept);
        match report.torn.as_slice() {
            [] => assert_eq!(body, &stream[..body.len()], "seed {seed}: a prefix"),
            [t] => {
                torn += 1;
                assert_eq!(t.path, Path::new("log"));
                assert!(t.kept >= 1 && t.kept < t.len, "seed {seed}: {t:?}");
                let torn_at = (t.offset + t.kept) as usize - HEADER.len();
                assert!(
                    torn_at < stream.len(),
                    "seed {seed}: a tear inside the writes"
                );
                assert_eq!(&body[..torn_at], &stream[..torn_at], "seed {seed}");
                if t.zero_filled {
                    zero_filled += 1;
                    let end = (t.offset + t.len) as usize - HEADER.len();
                    assert_eq!(body.len(), end, "seed {seed}: {t:?}");
                    assert!(body[torn_at..].iter().all(|&b| b == 0), "seed {seed}");
                } else {
                    cut_short += 1;
                    assert_eq!(body.len(), torn_at, "seed {seed}: {t:?}");
                }
            }
            more => panic!("seed {seed}: one file, one tear at most: {more:?}"),
        }
    }
    assert!(torn > 20, "most cuts tear a write ({torn} of 40)");
    assert!(
        zero_filled > 0 && cut_short > 0,
        "both kinds of tear happen"
    );
    assert!(kept_counts.contains(&0) && kept_counts.iter().any(|&k| k > 2));
}

/// Torn mode on directory entries keeps a prefix of them in the order they were made.
#[test]
fn torn_mode_keeps_a_prefix_of_directory_changes() {
    let Some(mut s) = mount("torn-entries") else {
        return;
    };
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..12u64 {
        for i in 0..4 {
            File::create(s.path(&format!("f{i}"))).unwrap();
        }
        let report = s.cut(CutMode::TornPrefix { seed });
        let present: Vec<bool> = (0..4).map(|i| s.path(&format!("f{i}")).exists()).collect();
        let kept = present.iter().filter(|&&p| p).count();
        assert_eq!(kept, report.entries_kept, "seed {seed}");
        assert!(present[..kept].iter().all(|&p| p), "seed {seed}: a prefix");
        seen.insert(kept);
        for i in 0..4 {
            let _ = fs::remove_file(s.path(&format!("f{i}")));
        }
        sync_dir(s.mnt());
    }
    assert!(seen.len() > 2, "different prefixes: {seen:?}");
}

#[test]
fn a_checkpoint_makes_everything_durable() {
    let Some(mut s) = mount("checkpoint") else {
        return;
    };
    fs::create_dir(s.path("dir")).unwrap();
    fs::write(s.path("dir/file"), b"never fsynced").unwrap();
    durable_file(s.mnt(), "gone", b"x");
    fs::remove_file(s.path("gone")).unwrap();
    s.fs.as_ref().unwrap().checkpoint().unwrap();
    assert_eq!(s.fs.as_ref().unwrap().unsynced(), Default::default());
    let report = s.cut(CutMode::DropUnsynced);
    assert_eq!((report.data_ops_dropped, report.entries_undone), (0, 0));
    assert_eq!(fs::read(s.path("dir/file")).unwrap(), b"never fsynced");
    assert!(!s.path("gone").exists());
}
