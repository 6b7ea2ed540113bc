//! Generates the interface code from idl/pasid-alloc.idol.ron into $OUT_DIR.

fn main() {
    idl::build_api("pasid-alloc");
}
