//! `uniffi-bindgen` built from this workspace, so the generator always matches the UniFFI version
//! that mobile-core was compiled with.

fn main() {
    uniffi::uniffi_bindgen_main()
}
