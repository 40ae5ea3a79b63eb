//! How one directory's index behaves as it grows: writes files (1-byte uploads, through the
//! same `write_file` an upload uses) into one directory of an in-memory store up to each size
//! given, then times 1,000 more writes of names spread over the directory and their deletes,
//! and checks a listing page from the middle and the whole listing's count. Prints `label value` lines (bench/dirs.sh).
//!
//!   cargo run --release -p downlink-core --features memory-storage --example dir_index_scale -- 1000 100000 1000000

use std::time::Instant;

use downlink_core::blob::BlobId;
use downlink_core::storage::{delete_file, dir_entries, write_file, MemoryStorage, WriteOptions};
use downlink_core::StoragePath;

const SAMPLE: usize = 1000;

fn path(dir: &StoragePath, number: usize) -> StoragePath {
    dir.join(&format!("f-{number:08}.txt")).expect("a valid name")
}

fn write(storage: &MemoryStorage, dir: &StoragePath, number: usize) {
    let path = path(dir, number);
    let blob = BlobId::new(format!("b{number}")).expect("a valid blob id");
    write_file(storage, &path, blob, [b"x"], WriteOptions::default(), 1).expect("write");
}

fn main() {
    let mut sizes: Vec<usize> = std::env::args().skip(1).map(|arg| arg.parse().expect("sizes are numbers")).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let storage = MemoryStorage::new();
    let dir = StoragePath::parse("big").expect("a valid path");
    let mut filled = 0;
    for size in sizes {
        // Even numbers fill the directory; the timed odd ones land all over it.
        (filled..size).for_each(|i| write(&storage, &dir, 2 * i));
        filled = size;
        let step = (size / SAMPLE).max(1);
        let started = Instant::now();
        (0..SAMPLE).for_each(|i| write(&storage, &dir, 2 * i * step + 1));
        let per_write = started.elapsed() / SAMPLE as u32;
        let started = Instant::now();
        for i in 0..SAMPLE {
            delete_file(&storage, &path(&dir, 2 * i * step + 1), None).expect("delete");
        }
        let per_delete = started.elapsed() / SAMPLE as u32;
        let after = format!("f-{:08}.txt", size);
        let started = Instant::now();
        let page = dir_entries(&storage, &dir, Some(&after)).expect("listing").take(100).count();
        let page_time = started.elapsed();
        let total = dir_entries(&storage, &dir, None).expect("listing").count();
        assert_eq!(page, 100);
        assert_eq!(total, size);
        println!("write_at_{size}_entries {:.1}us", per_write.as_secs_f64() * 1e6);
        println!("delete_at_{size}_entries {:.1}us", per_delete.as_secs_f64() * 1e6);
        println!("page_of_100_at_{size}_entries {:.1}us", page_time.as_secs_f64() * 1e6);
    }
    let pages = storage.keys().iter().filter(|key| key.starts_with("dirpage:")).count();
    println!("index_pages {pages}");
}
