//! The image-file flash keeps NOR rules: erase sets a sector to 0xFF, a write may only clear
//! bits, and the engine's writes land in the file at once.
#![cfg(feature = "std")]

use acorn_nvs::{FileFlash, FileFlashError, Nvs};
use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};

#[test]
fn nor_rules_and_persistence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flash.bin");
    let mut flash = FileFlash::create(&path, 0x3000).unwrap();
    assert!(
        FileFlash::create(&path, 0x3000).is_err(),
        "create never overwrites"
    );
    flash.write(10, &[0x0F]).unwrap();
    flash.write(10, &[0x05]).unwrap(); // clearing more bits is fine
    assert!(matches!(
        flash.write(10, &[0xFF]),
        Err(FileFlashError::BitSet { offset: 10 })
    ));
    assert!(matches!(
        flash.write(0x3000, &[0]),
        Err(FileFlashError::OutOfBounds)
    ));
    assert!(matches!(
        flash.erase(1, 4096),
        Err(FileFlashError::NotAligned)
    ));
    flash.erase(0, 4096).unwrap();
    let mut byte = [0u8; 1];
    flash.read(10, &mut byte).unwrap();
    assert_eq!(byte, [0xFF]);

    let mut nvs = Nvs::open(flash, 0, 0x3000).unwrap();
    let ns = nvs.namespace("settings").unwrap();
    nvs.set::<u8>(ns, "volume", 7).unwrap();
    drop(nvs);
    let mut nvs = Nvs::open(FileFlash::open(&path).unwrap(), 0, 0x3000).unwrap();
    let ns = nvs.find_namespace("settings").unwrap();
    assert_eq!(nvs.get::<u8>(ns, "volume").unwrap(), Some(7));
}
