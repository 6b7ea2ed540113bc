//! Generates the interface code from idl/prq-server.idol.ron into $OUT_DIR.

fn main() {
    idl::build_api("prq-server");
}
