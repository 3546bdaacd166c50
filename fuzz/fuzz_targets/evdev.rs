#![no_main]

autograph_fuzz::heap_budget!();

libfuzzer_sys::fuzz_target!(init: autograph_fuzz::init(&HEAP), |data: &[u8]| {
    autograph_fuzz::run(autograph_fuzz::bodies::evdev, data)
});
