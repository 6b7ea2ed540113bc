//! Generates the interface code from idl/supervisor.idol.ron into $OUT_DIR.

fn main() {
    idl::build_api("supervisor");
}
