//! Generates the interface code from idl/vmm-frontend.idol.ron into $OUT_DIR.

fn main() {
    idl::build_api("vmm-frontend");
}
